"""Server-Sent Events: an incremental decoder (bytes in, events out) and an encoder.

Owns: the `text/event-stream` format, per the WHATWG HTML "Server-sent events" parsing
rules. `SSEDecoder` is a small stateful object in the style of h11's connection: no I/O,
feed it bytes as they arrive, in any chunking, and it returns the events completed so far.
Splitting the same bytes differently never changes the events.

Decoding rules:
- UTF-8 only; a multi-byte character may be split across chunks; invalid bytes become
  U+FFFD. One leading BOM at the start of the stream is dropped (nowhere else).
- Lines end with CRLF, LF or CR. A CR ending one chunk and an LF starting the next are
  one line ending, not two (no spurious blank line).
- A blank line dispatches the event being built. A line starting with ':' is a comment
  (counted in `comments`, otherwise ignored). Otherwise the line is `name: value` (one
  space after the first colon removed), or, with no colon, a field name with an empty
  value. Fields: `event` sets the type (default "message"); `data` appends to the data
  buffer (lines joined by "\\n"); `id` sets the last event id unless the value contains
  NUL; `retry` sets the reconnection time (ms) when the value is ASCII digits only,
  else it is ignored; any other name is ignored.
- At dispatch an empty data buffer (no `data` line at all) fires nothing and the event
  type is reset. Otherwise an `SSEEvent` fires with the data (last "\\n" removed).
- `id` and `retry` are connection state: they persist across events, so each event
  carries the last id and retry seen so far (None until one is seen; `id:` with an empty
  value sets the id to "", which means "no id" to a reconnecting EventSource).
- A piece that is exactly one `data: ...` line and its blank line, with nothing pending
  (how providers send stream chunks), or several such events one after the other (a
  read that found chunks waiting), is dispatched without the line-by-line walk: the
  same events, the same state after them.
- End of stream: per the spec an unterminated final event is NOT dispatched; `close()`
  returns [] and exists so callers have one place to say "the stream ended".
  `has_pending()` says whether an incomplete tail exists (a partial line, data lines
  without their blank line, or a split UTF-8 character): a provider stream ending like
  that was cut. After `close()`, `feed` raises `RuntimeError`.

Encoding rules:
- `encode_event` writes `event:`, `id:`, `retry:` lines (when given), then one `data:`
  line per line of `data` (split on CRLF, CR and LF: so CR and CRLF inside data decode
  as "\\n"), then a blank line. Every value is written after ": ", so a leading space in
  a value survives decoding. `event`/`id` containing CR or LF, an `id` containing NUL,
  or a negative `retry` raise `ValueError`.
- `encode_comment(text)` writes one `:` line per line of text and a blank line (which
  dispatches nothing): the usual keep-alive.
- `data_template(data, slot)` precompiles the one-line `data:` event `data` around the
  one place `slot` occurs in it (None when it occurs other than once, or `data` is not
  one line): `render(value)` is then `encode_event(data.replace(slot, value))`, byte
  for byte, for any `value` without CR or LF (a JSON value's encoding never has one),
  in two concatenations. For streams whose events differ in one value (a chat chunk's
  text).
"""

from __future__ import annotations

import codecs
import re
from typing import NamedTuple

from attrs import frozen

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"


class SSEEvent(NamedTuple):
    """One dispatched event (make it with keywords). A named tuple: one is made per
    provider chunk, and its constructor costs a fraction of a frozen attrs class's."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


# `_TUPLE_NEW(SSEEvent, (data, event, id, retry))`: an SSEEvent as the named tuple's own
# `__new__` makes it, without that Python frame (one is made per provider chunk)
_TUPLE_NEW = tuple.__new__


class SSEDecoder:
    """Incremental WHATWG event-stream parser; see the module docstring for the rules."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False  # has any text been decoded (BOM check done)?
        self._skip_lf = False  # the last chunk ended in CR: drop an LF starting the next
        self._partial: list[str] = []  # pieces of the current line (no line ending yet)
        self._data: list[str] = []
        self._event = ""
        self._closed = False
        self.last_event_id: str | None = None
        self.retry: int | None = None
        self.comments = 0

    def feed(self, data: bytes) -> list[SSEEvent]:
        if self._closed:
            raise RuntimeError("feed() after close()")
        utf8 = self._utf8
        if utf8.buffer:  # a character split by the last piece goes on here
            text = utf8.decode(data)
        else:  # the usual piece: whole UTF-8, decoded without the incremental decoder's frame
            try:
                text = data.decode()
            except UnicodeDecodeError:  # split at its end, or invalid: the decoder's way
                text = utf8.decode(data)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text.startswith(_BOM):
                text = text[1:]
                if not text:
                    return []
        if self._skip_lf:
            self._skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
                if not text:
                    return []
        if (  # the usual piece of a stream: one whole `data:` line and its blank line
            text.endswith("\n\n")
            and text.startswith("data: ")
            and "\r" not in text
            and not self._partial
            and not self._data
        ):
            if text.count("\n") == 2:
                event = _TUPLE_NEW(SSEEvent, (text[6:-2], self._event or "message", self.last_event_id, self.retry))
                self._event = ""
                return [event]
            whole = self._whole_data_events(text)
            if whole is not None:
                return whole
        self._skip_lf = text.endswith("\r")
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text:
            self._partial.append(text)  # a list: a long line fed byte by byte stays O(n)
            return []
        if self._partial:
            text = "".join(self._partial) + text
        lines = text.split("\n")
        tail = lines.pop()
        self._partial = [tail] if tail else []
        events: list[SSEEvent] = []
        for line in lines:
            if line:
                self._field(line)
            elif self._data:
                events.append(self._dispatch())
            else:
                self._event = ""
        return events

    def _whole_data_events(self, text: str) -> list[SSEEvent] | None:
        """Several whole one-line `data:` events in one piece (a read that found chunks
        waiting), each dispatched as the one-event piece is; None for anything else."""
        parts = text[:-2].split("\n\n")
        for part in parts:
            if not part.startswith("data: ") or "\n" in part:
                return None
        first, rest = self._event or "message", "message"  # the type applies to the first
        self._event = ""
        last, retry = self.last_event_id, self.retry
        return [_TUPLE_NEW(SSEEvent, (part[6:], rest if i else first, last, retry)) for i, part in enumerate(parts)]

    def close(self) -> list[SSEEvent]:
        """End of stream: an unterminated event is dropped (spec), so this returns []."""
        self._closed = True
        return []

    def has_pending(self) -> bool:
        """True when bytes were fed that no complete event accounts for (a cut-off tail)."""
        return bool(self._partial or self._data or self._utf8.getstate()[0])

    def _field(self, line: str) -> None:
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "":
            self.comments += 1
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry = int(value)

    def _dispatch(self) -> SSEEvent:
        event = SSEEvent("\n".join(self._data), self._event or "message", self.last_event_id, self.retry)
        self._data = []
        self._event = ""
        return event


def _check_line(name: str, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError(f"SSE {name} must not contain CR or LF")


def encode_event(
    data: str, *, event: str | None = None, id: str | None = None, retry: int | None = None
) -> bytes:
    if event is None and id is None and retry is None and "\n" not in data and "\r" not in data:
        return f"data: {data}\n\n".encode()  # the common case (one JSON line): one format
    parts: list[str] = []
    if event is not None:
        _check_line("event", event)
        parts.append(f"event: {event}\n")
    if id is not None:
        _check_line("id", id)
        if "\0" in id:
            raise ValueError("SSE id must not contain NUL")
        parts.append(f"id: {id}\n")
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise ValueError("SSE retry must be a non-negative int (milliseconds)")
        parts.append(f"retry: {retry}\n")
    parts.extend(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def encode_comment(text: str = "") -> bytes:
    lines = _LINE_BREAK.split(text)
    return ("".join(f": {line}\n" if line else ":\n" for line in lines) + "\n").encode("utf-8")


@frozen
class DataTemplate:
    """A one-line `data:` event with one slot; see `data_template`."""

    head: bytes
    tail: bytes

    def render(self, value: bytes) -> bytes:
        """The event with `value` (UTF-8, no CR or LF) in the slot."""
        return self.head + value + self.tail


def data_template(data: str, slot: str) -> DataTemplate | None:
    """`encode_event(data)` split around the one occurrence of `slot` (see the rules)."""
    if not slot or data.count(slot) != 1 or "\n" in data or "\r" in data:
        return None
    before, _, after = data.partition(slot)
    return DataTemplate(f"data: {before}".encode(), f"{after}\n\n".encode())
