"""An HTTP/1.1 response body read from the bytes that follow its head, by us, not by h11.

Owns: the three ways a response body is delimited (RFC 9112 section 6.3) and decoding
each incrementally: the chunked transfer coding, a `content-length`, or the connection's
end. The pooled client (`http11.py`) parses the response head (`head.py`, or h11) and feeds the
bytes after it here; h11's per-event machinery (an event object, its state machine and a
copy per chunk) is what a relayed stream paid per chunk before.

Rules:
- `feed(data)` returns the body bytes `data` completes (every piece of one read joined:
  b"" when it held only framing); `end()` is the connection's EOF and raises
  `BodyError` when the body is incomplete. `done` is set once the body's end was read;
  `extra` when bytes followed it (the connection is then not reused).
- Chunked: a size line is 1 to 20 hex digits, optional `;` extensions (ignored) and
  spaces or tabs, ending in CRLF; each chunk's data is followed by CRLF; the last chunk
  (size 0) is followed by trailer lines (read and dropped) and an empty line. Anything
  else is a `BodyError` naming what was wrong, as h11 rejects it. A size line or
  trailer line longer than `LINE_LIMIT` is refused rather than buffered without bound.
- `BodyError` texts quote at most a few bytes of the server's framing, never the body.
- A read that starts at a chunk's size line (a stream's usual read: one or several
  whole chunks) is taken chunk by chunk without the state loop, which goes on from the
  first chunk that is not whole there (the last one, one cut by the read, or a refusal).
- No I/O: the caller reads the socket and maps `BodyError` to its failure.
"""

from __future__ import annotations

import re
from typing import Protocol

LINE_LIMIT = 16 * 1024
_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\r\n]*)?[ \t]*")


class BodyError(Exception):
    """The body's framing is broken, or the connection ended before the body did."""


class BodyReader(Protocol):
    done: bool
    extra: bool

    def feed(self, data: bytes) -> bytes: ...

    def end(self) -> None: ...


# The chunked decoder's states.
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class Chunked:
    """The chunked transfer coding, decoded incrementally (see the module rules)."""

    __slots__ = ("_buf", "_left", "_state", "done", "extra")

    def __init__(self) -> None:
        self._buf = b""  # bytes fed but not yet decoded (a partial size or trailer line)
        self._left = 0  # data bytes still due in the current chunk
        self._state = _SIZE
        self.done = False
        self.extra = False

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.extra = self.extra or bool(data)
            return b""
        out: list[bytes] = []
        pos = 0
        if self._state == _SIZE and not self._buf:
            buf = data
            size = len(buf)
            # a stream's usual read: whole chunks (a size line, the data, CRLF), taken
            # without the state loop, which goes on from the first that is not whole
            while True:
                eol = buf.find(b"\r\n", pos, pos + 64)
                match = _SIZE_LINE.fullmatch(buf, pos, eol) if eol > pos else None
                if match is None:
                    break
                start = eol + 2
                end = start + int(match.group(1), 16)
                if end == start:
                    break  # the last chunk: its trailers are the state loop's
                if end + 2 > size:  # this chunk goes on in the next read: its data from here
                    self._left, self._state, pos = end - start, _DATA, start
                    break
                if buf[end] != 13 or buf[end + 1] != 10:
                    break  # refused by the state loop
                out.append(buf[start:end])
                pos = end + 2
                if pos == size:
                    return out[0] if len(out) == 1 else b"".join(out)
        else:
            buf = self._buf + data if self._buf else data
            size = len(buf)
        self._buf = b""
        state = self._state
        while pos < size:
            if state == _DATA:
                take = min(self._left, size - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._left -= take
                if self._left:
                    break
                state = _DATA_END
            elif state == _DATA_END:
                if size - pos < 2:
                    if buf[pos : pos + 1] != b"\r":
                        raise BodyError(f"malformed chunk footer: {buf[pos:pos + 2]!r}")
                    break  # the LF is in the next read
                if buf[pos] != 13 or buf[pos + 1] != 10:
                    raise BodyError(f"malformed chunk footer: {buf[pos:pos + 2]!r}")
                pos += 2
                state = _SIZE
            else:  # a size line or a trailer line, up to CRLF
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if size - pos > LINE_LIMIT:
                        raise BodyError("chunk size or trailer line too long")
                    break
                line = buf[pos:eol]
                pos = eol + 2
                if state == _SIZE:
                    match = _SIZE_LINE.fullmatch(line)
                    if match is None:
                        raise BodyError(f"illegal chunk header: {line[:40]!r}")
                    self._left = int(match.group(1), 16)
                    state = _DATA if self._left else _TRAILER
                elif not line:  # the empty line after the trailers: the body's end
                    state = _DONE
                    self.done = True
                    self.extra = pos < size
                    break
                # else a trailer line: dropped
        self._state = state
        if pos < size and not self.done:
            self._buf = buf[pos:]
        if len(out) == 1:
            return out[0]
        return b"".join(out)

    def end(self) -> None:
        if not self.done:
            raise BodyError("the server closed the connection before the chunked body ended")


class Sized:
    """A body of `content-length` bytes."""

    __slots__ = ("_left", "done", "extra")

    def __init__(self, length: int) -> None:
        self._left = length
        self.done = length == 0
        self.extra = False

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.extra = self.extra or bool(data)
            return b""
        left = self._left
        if len(data) < left:
            self._left = left - len(data)
            return data
        self._left = 0
        self.done = True
        self.extra = len(data) > left
        return data[:left] if self.extra else data

    def end(self) -> None:
        if not self.done:
            raise BodyError(f"the server closed the connection {self._left} bytes before the body's end")


class UntilClose:
    """A body delimited by the connection's end (no length, not chunked)."""

    __slots__ = ("done", "extra")

    def __init__(self) -> None:
        self.done = False
        self.extra = False

    def feed(self, data: bytes) -> bytes:
        return data

    def end(self) -> None:
        self.done = True


def reader_for(status: int, headers: list[tuple[bytes, bytes]]) -> BodyReader:
    """The body reader of a response to a POST, from its head as h11 parsed it (h11 has
    already refused a transfer coding other than chunked and a conflicting length)."""
    length: bytes | None = None
    for name, value in headers:
        if name == b"transfer-encoding":
            return Chunked()
        if name == b"content-length":
            length = value
    if status in (204, 304) or status < 200:
        return Sized(0)
    if length is not None:
        return Sized(int(length))
    return UntilClose()
