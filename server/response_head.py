"""A well-formed HTTP/1.1 response head, written here instead of through h11's checks.

Owns: `direct_head(connection, status, headers)`: for the heads this gateway's own
answers have (status 200..999 but not 204 or 304, lowercase header names, at most one
`content-length`, no framing or connection headers of the app's, an HTTP/1.1 client
that asked with a method other than HEAD or CONNECT, a connection kept alive) it checks
each name and value once against the rules h11 applies (RFC 9110's token and field
value), writes the bytes h11 writes for that head (`HTTP/1.1 <status> \\r\\n`, each
header as given, then for a head without a length h11's `Transfer-Encoding: chunked`,
the blank line) and moves h11's connection to sending the body, sized or chunked, as
`h11.Connection.send` does. For anything else it returns None and the caller sends the
head through h11 as before, so h11 still owns every unusual case (HEAD, HTTP/1.0, an
app's own framing headers, `connection: close`, upgrades, odd bytes).

Why: h11 checks each header twice for a head (`h11.Response` and again in `send`'s
clean-up, with regular expressions per header) and Hypercorn builds two event objects:
about 50 µs of a lone request's 1.7 ms of CPU (docs/performance.md). Written against
h11 0.16 (pinned in constraints.txt): the state step uses h11's own event processing
(`Connection._process_event`), given a `Response` that carries only the head's
`content-length` (all that step reads of a head like these); `tests/server/test_response_head.py` checks the bytes and the state against
h11's on generated heads.
"""

from __future__ import annotations

import re

import h11
from h11._headers import Headers

from adapters.providers.head import FIELD_VALUE

# RFC 9110 token, lowercase only (what the gateway's own names are); field values are
# checked with h11's expression (no NUL, no CR/LF, no leading or trailing whitespace).
_NAME = rb"[-!#$%&'*+.^_`|~0-9a-z]+"
_NAMES = re.compile(_NAME + rb"(?:\n" + _NAME + rb")*")  # names joined by newlines
_VALUES = re.compile(FIELD_VALUE + rb"(?:\n" + FIELD_VALUE + rb")*")
_LENGTH = re.compile(rb"[0-9]{1,20}")
_UNUSUAL = frozenset({b"transfer-encoding", b"connection", b"host", b"upgrade"})
_BODYLESS = frozenset({204, 304})
_CHUNKED = (b"transfer-encoding", b"chunked")
_CHUNKED_END = b"Transfer-Encoding: chunked\r\n\r\n"  # what h11 adds to a head without a length


class CheckedNames:
    """The header names (joined by newlines) of the last head `direct_head` wrote for one
    connection: a connection's answers repeat their names, whose check is then skipped
    (the values, which change, are checked every time)."""

    __slots__ = ("names",)

    def __init__(self) -> None:
        self.names = b""


def direct_head(connection: h11.Connection, status: int, headers: list[tuple[bytes, bytes]],
                checked: CheckedNames | None = None) -> bytes | None:
    """The head's bytes, with h11's connection moved on as if it had sent them; None
    when the head or the connection is one h11 should handle. With `checked`, names
    the same as the last head's written are not checked again."""
    if (
        not 200 <= status < 1000
        or status in _BODYLESS
        or connection.our_state is not h11.SEND_RESPONSE
        or connection.their_state is h11.ERROR
        or connection.their_http_version != b"1.1"
        or connection._request_method in (b"HEAD", b"CONNECT")
    ):
        return None
    cstate = connection._cstate
    if not cstate.keep_alive or cstate.pending_switch_proposals:
        return None
    try:
        names = b"\n".join([name for name, _ in headers])
        values = b"\n".join([value for _, value in headers])
    except TypeError:  # a str among them
        return None
    lengths = [value for name, value in headers if name == b"content-length"]
    if (
        len(lengths) > 1
        or (lengths and _LENGTH.fullmatch(lengths[0]) is None)
        or not _UNUSUAL.isdisjoint([name for name, _ in headers])
        # one check of all names and one of all values; the counts rule out a newline
        # inside a name or value passing as two of them
        or names.count(b"\n") != len(headers) - 1
        or values.count(b"\n") != len(headers) - 1
        or (names != (checked.names if checked is not None else None) and _NAMES.fullmatch(names) is None)
        or _VALUES.fullmatch(values) is None
    ):
        return None
    if checked is not None:
        checked.names = names
    # h11's state step reads only the framing and `connection` headers of the event:
    # given the one framing header (the head has no other, nor a connection header), it
    # moves on exactly as for the whole head, without scanning the rest.
    framing = (b"content-length", lengths[0]) if lengths else _CHUNKED
    event = h11.Response(
        headers=Headers([(framing[0], framing[0], framing[1])]),
        status_code=status,
        _parsed=True,
    )
    try:
        connection._process_event(h11.SERVER, event)
    except BaseException:
        connection._process_error(h11.SERVER)
        raise
    lines = [b"HTTP/1.1 %d \r\n" % status]
    lines.extend([b"%s: %s\r\n" % pair for pair in headers])
    lines.append(b"\r\n" if lengths else _CHUNKED_END)
    return b"".join(lines)
