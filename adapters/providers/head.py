"""HTTP/1.1 heads read and written directly, for the plain case; h11 for everything else.

Owns: encoding a plain POST request head (`encode_request`) and parsing a plain final
response head (`parse_response`), without an `h11.Connection` and its event machinery
per exchange (`http11.py` uses them; it falls back to h11 when they answer None).

Rules:
- Both accept a strict subset of what h11 accepts, and give what h11 gives for it: the
  same bytes on the wire for a request; the same status, header list (names lower-cased,
  values as h11 normalises them) and reuse verdict for a response. Anything outside the
  subset answers None, never an error: h11 then decides, so a malformed head still fails
  exactly as it did (tests/adapters/test_heads.py checks both against h11).
- A request is plain when every field is valid for h11, it has one `host` and one
  `content-length` (digits), and none of its names changes how the exchange is framed or
  kept (`connection`, `upgrade`, `transfer-encoding`, `expect`).
- A response head is plain when its lines end in CRLF, its status line is `HTTP/1.1`
  with a final status (200 to 599), every header line is `name: value` with no folding,
  and its framing headers are simple: at most one `content-length` (digits only) or one
  `transfer-encoding: chunked`, not both. It may be reused unless a `connection` header
  names `close`.
"""

from __future__ import annotations

import re

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
FIELD_VALUE = rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?"  # h11's field-value: no NUL, no CR/LF
_NAMES_RE = re.compile(_TOKEN + rb"(?:\n" + _TOKEN + rb")*")  # names joined by newlines
_VALUES_RE = re.compile(FIELD_VALUE + rb"(?:\n" + FIELD_VALUE + rb")*")  # values, likewise
_TARGET_RE = re.compile(rb"[\x21-\x7e]+")
_FIELD_RE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + FIELD_VALUE + rb")[ \t]*")
_STATUS_RE = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9])(?: [^\x00\n\r\x0b\x0c]*)?")
_UNPLAIN_REQUEST = frozenset({b"connection", b"upgrade", b"transfer-encoding", b"expect"})
_LENGTH_DIGITS = 20  # h11 refuses a longer content-length


def encode_request(target: bytes, fields: list[tuple[bytes, bytes]]) -> bytes | None:
    """The head of `POST target HTTP/1.1` with `fields`, as h11 writes it (the one `host`
    first, the others in order); None if not plain or not valid."""
    if not _TARGET_RE.fullmatch(target):
        return None
    # one check of all names and one of all values, joined by newlines (which neither a
    # name nor a value may hold: the counts rule out one inside a name or value passing
    # as two of them), not two regular expressions per field
    try:
        names = b"\n".join([name for name, _ in fields])
        values = b"\n".join([value for _, value in fields])
    except TypeError:  # not bytes: h11 decides
        return None
    if (
        names.count(b"\n") != len(fields) - 1
        or values.count(b"\n") != len(fields) - 1
        or _NAMES_RE.fullmatch(names) is None
        or _VALUES_RE.fullmatch(values) is None
    ):
        return None
    lengths = hosts = 0
    host = b""
    lines: list[bytes] = []
    for name, value in fields:
        lower = name.lower()
        if lower in _UNPLAIN_REQUEST:
            return None
        if lower == b"host":
            hosts += 1
            host = b"%s: %s\r\n" % (name, value)
            continue
        if lower == b"content-length":
            lengths += 1
            if not value.isdigit() or len(value) > _LENGTH_DIGITS:
                return None
        lines.append(b"%s: %s\r\n" % (name, value))
    if hosts != 1 or lengths != 1:
        return None
    return b"".join((b"POST ", target, b" HTTP/1.1\r\n", host, *lines, b"\r\n"))


def parse_response(head: bytes) -> tuple[int, list[tuple[bytes, bytes]], bool] | None:
    """Status, headers and "may be reused" of a plain final response head (its blank line
    included), as h11 reads them; None if the head is not plain."""
    if not head.endswith(b"\r\n\r\n"):
        return None
    lines = head[:-4].split(b"\r\n")
    status_line = _STATUS_RE.fullmatch(lines[0])
    if status_line is None:
        return None
    headers: list[tuple[bytes, bytes]] = []
    keep = True
    length = chunked = False
    for line in lines[1:]:
        field = _FIELD_RE.fullmatch(line)
        if field is None:
            return None
        name, value = field.group(1).lower(), field.group(2)
        if name == b"content-length":
            if length or chunked or not value.isdigit() or len(value) > _LENGTH_DIGITS:
                return None
            length = True
        elif name == b"transfer-encoding":
            if length or chunked or value.lower() != b"chunked":
                return None
            value = b"chunked"
            chunked = True
        elif name == b"connection" and b"close" in (v.strip() for v in value.lower().split(b",")):
            keep = False
        headers.append((name, value))
    return int(status_line.group(1)), headers, keep
