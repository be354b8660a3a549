"""The call plumbing every HTTP provider shares: one JSON call, one SSE stream.

Owns: turning a transport answer into a decoded JSON body or a sequence of StreamEvents,
with non-2xx answers mapped through `failures.error_from_response`.

Rules:
- SSE framing is `core.sse.SSEDecoder`'s job; the wire codecs see (event, data) pairs
  through the `EventDecoder` protocol (`on_event`, `finish` at EOF, `done`). Events
  decoded before a failing one are yielded before its error is raised, however the
  upstream's bytes were split into reads.
- When the codec reports `done`, the rest of the body is drained (bounded) before the
  final events are yielded, so a completed stream's connection is reused; leaving
  `stream_reads` / `stream_events` early (aclose, cancellation, error) leaves the
  transport's context, which closes the upstream connection.
- `stream_reads` yields the events read by read (the events one upstream read
  completed, together: the request driver relays them in one client write);
  `stream_events` yields the same events one by one.
- A 2xx JSON body that does not parse, or does not decode, is SERVER_ERROR.
- Every upstream text in a message is redacted of `secrets` (failures.redact).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import msgspec

from adapters.providers.base import ProviderError, Timeouts
from adapters.providers.failures import error_from_response, redact
from adapters.providers.transport import Transport
from core.model import FailureKind, StreamEvent
from core.sse import SSEDecoder

T = TypeVar("T")
DRAIN_LIMIT = 16 * 1024
WallClock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class EventDecoder(Protocol):
    done: bool

    def on_event(self, event: str, data: str) -> list[StreamEvent]: ...

    def finish(self) -> list[StreamEvent]: ...


class SSEStreamDecoder:
    """Bytes of an SSE body -> StreamEvents, through `core.sse` and a wire codec.

    When the codec raises on an event (an error event, a malformed one) after other
    events of the same bytes (one read may hold several), those are still given: `feed`
    returns them and keeps the failure in `failure`, raised by the next `feed` or `close`
    unless the caller raises it first, after passing them on. With no event before it,
    `feed` raises at once."""

    def __init__(self, events: EventDecoder) -> None:
        self._sse = SSEDecoder()
        self._events = events
        self.failure: ProviderError | None = None

    @property
    def done(self) -> bool:
        return self._events.done

    def feed(self, data: bytes) -> list[StreamEvent]:
        if self.failure is not None:
            raise self.failure
        found = self._sse.feed(data)
        if len(found) == 1 and not self._events.done:  # the usual piece: one event, no list of ours
            sse = found[0]
            return self._events.on_event(sse.event or "", sse.data)  # raises at once: none before it
        out: list[StreamEvent] = []
        for sse in found:
            if self._events.done:
                break
            try:
                out.extend(self._events.on_event(sse.event or "", sse.data))
            except ProviderError as err:
                if not out:
                    raise
                self.failure = err
                break
        return out

    def close(self) -> list[StreamEvent]:
        """At EOF: flush the SSE decoder, then let the codec end (or raise STREAM_CUT)."""
        if self.failure is not None:
            raise self.failure
        out: list[StreamEvent] = []
        tail = self._sse.close()
        for sse in tail or ():
            if not self._events.done:
                out.extend(self._events.on_event(sse.event or "", sse.data))
        return out + self._events.finish()


def _redacted(err: ProviderError, secrets: Iterable[str | None]) -> ProviderError:
    return ProviderError(
        err.kind, redact(err.message, secrets), status=err.status, retry_after=err.retry_after
    )


_DECODE = msgspec.json.Decoder().decode


def _json_value(raw: bytes) -> Any:
    """An answer's JSON: msgspec's decode (C, one call), or for what it refuses the stdlib's
    (which also reads NaN, a byte order mark, 1e400 as inf), so answers read as before."""
    try:
        return _DECODE(raw)
    except msgspec.DecodeError:
        return json.loads(raw)


async def call_json(
    transport: Transport, provider: str, url: str, headers: Mapping[str, str],
    body: object, *, timeouts: Timeouts, secrets: Iterable[str | None],
    decode: Callable[[dict[str, Any]], T], wall: WallClock = utc_now,
) -> T:
    """POST `body`, map a failure, and decode the 2xx JSON answer with `decode`."""
    try:
        status, resp_headers, raw = await transport.post_json(url, headers, body, timeouts=timeouts)
    except ProviderError as err:
        raise _redacted(err, secrets) from None
    if not 200 <= status < 300:
        raise error_from_response(provider, status, resp_headers, raw, secrets=secrets, now=wall())
    try:
        data = _json_value(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return decode(data)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ProviderError(
            FailureKind.SERVER_ERROR,
            redact(f"{provider} returned an unreadable answer: {exc}", secrets),
            status=status,
        ) from None


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows the end event (normally only the chunked-body terminator) so the
    connection goes back to the pool; give up, closing it, after DRAIN_LIMIT bytes or on
    any transport failure: the stream itself is already complete."""
    seen = 0
    try:
        async for chunk in chunks:
            seen += len(chunk)
            if seen > DRAIN_LIMIT:
                return
    except ProviderError:
        return


async def stream_reads(
    transport: Transport, provider: str, url: str, headers: Mapping[str, str],
    body: object, *, timeouts: Timeouts, secrets: Iterable[str | None],
    events: EventDecoder, wall: WallClock = utc_now,
) -> AsyncGenerator[list[StreamEvent], None]:
    """POST `body` for a stream and yield its decoded events read by read: each list holds
    the events one upstream read completed, in order (never empty); the last ends with
    StreamEnd. Nothing is held across reads: a read's events are yielded before the next
    read."""
    decoder = SSEStreamDecoder(events)
    feed = decoder.feed
    try:
        async with transport.stream_post(url, headers, body, timeouts=timeouts) as response:
            if not 200 <= response.status < 300:
                raw = await response.read()
                raise error_from_response(
                    provider, response.status, response.headers, raw, secrets=secrets, now=wall()
                )
            async for chunk in response.chunks:
                batch = feed(chunk)
                if events.done:  # (`decoder.done`, without the property)
                    await _drain(response.chunks)
                if batch:
                    yield batch
                if decoder.failure is not None:
                    raise decoder.failure
                if events.done:
                    return
            tail = decoder.close()
            if tail:
                yield tail
    except ProviderError as err:
        raise _redacted(err, secrets) from None


async def stream_events(
    transport: Transport, provider: str, url: str, headers: Mapping[str, str],
    body: object, *, timeouts: Timeouts, secrets: Iterable[str | None],
    events: EventDecoder, wall: WallClock = utc_now,
) -> AsyncGenerator[StreamEvent, None]:
    """`stream_reads`' events one by one, ending with StreamEnd."""
    reads = stream_reads(
        transport, provider, url, headers, body, timeouts=timeouts, secrets=secrets,
        events=events, wall=wall,
    )
    try:
        async for batch in reads:
            for event in batch:
                yield event
    finally:
        await reads.aclose()  # leaving early closes the upstream at once
