"""A plain HTTP/1.1 request read in one pass, in front of h11.

Owns: `plain_request(data, limit)`: for the requests this gateway is sent (one whole
request in one read: an HTTP/1.1 request line, `name: value` header lines ending in CRLF,
one `host`, at most one `content-length` of digits and that many body bytes, nothing
after them) the method, target, header list and body, read as h11 reads them: names
lower-cased, values without the whitespace around them. Anything else answers None, and
the caller hands the bytes to h11 as before, so h11 still decides every unusual or
malformed request (and answers it with its 4xx).

Rules (a strict subset of what h11 0.16 accepts, with the same result for it):
- the request line is `<token> <visible ASCII> HTTP/1.1` (h11's method and target rules),
  not CONNECT;
- every header line is `<token>:<OWS><field value><OWS>` followed by CRLF (h11's
  header-field rule; a bare LF, an obsolete folded line, any other byte: None);
- exactly one `host`; at most one `content-length`, 1 to 20 digits; no `connection`,
  `upgrade`, `transfer-encoding` or `expect` (they change framing, keep-alive, protocol
  or 100-continue: h11's);
- the head (request line to the blank line) is at most `limit` bytes (Hypercorn's
  `h11_max_incomplete_size`), and `data` is the head and the whole body, nothing more
  (a pipelined next request or a body still to come: h11's).

Why: h11 reads a request head through its receive buffer, a generator per line, a
regular expression and a `validate` per line, the header list normalised again and its
event and state machine per event (request, data, end, need-data): about 250 k
instructions per request, a fifth of the floor under the gateway (docs/performance.md).
Here: two regular expressions over the whole head and a pass over its fields.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from adapters.providers.head import FIELD_VALUE

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/1\.1")
# h11's header-field rule with the line's CRLF (FIELD_VALUE has no capturing group)
_LINES = re.compile(rb"(?:" + _TOKEN + rb":[ \t]*" + FIELD_VALUE + rb"[ \t]*\r\n)+")  # all of them
_FIELDS = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + FIELD_VALUE + rb")[ \t]*\r\n")  # each one's parts
_LENGTH_DIGITS = 20  # h11 refuses a longer content-length
_FRAMING = frozenset({b"host", b"content-length", b"connection", b"upgrade", b"transfer-encoding",
                      b"expect"})


class PlainRequest(NamedTuple):
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]  # as h11 gives them: names lower-cased
    host: bytes
    length: bytes | None  # the `content-length` value, None without one
    body: bytes


def plain_request(data: bytes, limit: int) -> PlainRequest | None:
    """`data` read as one plain request (see the module rules); None: h11's to read."""
    end = data.find(b"\r\n\r\n", 0, limit)
    line_end = data.find(b"\r\n", 0, end)
    if end < 0 or line_end < 0:
        return None
    request_line = _REQUEST_LINE.fullmatch(data, 0, line_end)
    if request_line is None or request_line.group(1) == b"CONNECT":
        return None
    block = data[line_end + 2: end + 2]  # the header lines, each with its CRLF
    if _LINES.fullmatch(block) is None:
        return None
    headers = [(name.lower(), value) for name, value in _FIELDS.findall(block)]
    hosts = 0
    host = b""
    length: bytes | None = None
    for name, value in headers:
        if name in _FRAMING:
            if name == b"host":
                hosts += 1
                host = value
            elif name == b"content-length" and length is None:
                length = value
            else:  # a second content-length, or a name h11 must see
                return None
    size = 0
    if length is not None:
        if not length.isdigit() or len(length) > _LENGTH_DIGITS:
            return None
        size = int(length)
    if hosts != 1 or len(data) != end + 4 + size:
        return None
    return PlainRequest(request_line.group(1), request_line.group(2), headers, host, length,
                        data[end + 4:])
