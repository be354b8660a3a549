"""The HTTP transport the provider adapters speak through: one small, swappable interface.

Owns: sending a JSON POST and getting back either the whole answer or a streamed body,
with the gateway's four timeouts, and turning every transport failure into a
`ProviderError` at this boundary (mapping table: `failures.TRANSPORT_KINDS`). The
connections, the pool and HTTP/1.1 itself are `http11`'s (h11 + trio).

Interface (`Transport`, a Protocol):
- `await post_json(url, headers, body, *, timeouts) -> HttpResponse(status, headers, body)`
- `async with stream_post(url, headers, body, *, timeouts) as r:` gives a `StreamResponse`
  with `status`, `headers`, `chunks` (an async iterator of bytes, each piece as it
  arrives) and `await r.read()`. Leaving the block (normally, by error, by cancellation)
  ends the exchange; an unfinished body is never returned to the pool: the connection
  is closed.

Timeouts (`base.Timeouts`), measured from the start of the call:
- connect: waiting for a free pooled connection, and (again) opening a new one.
- first byte: from the request being sent until the response headers are in; for
  `post_json` also the longest wait for each further piece of the body.
- idle: the longest wait between two stream chunks.
- total: a deadline over the whole call (headers and every chunk).
No cancel scope is held open across a `yield` to the caller, so a caller's own work is
never cancelled by our deadlines. Header names in responses are lower-case. Response
bodies in errors are capped. Failure messages never contain request header values (the
provider key): they are redacted from every transport message.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import NamedTuple, Protocol

import h11
import msgspec
import trio
from attrs import define

from adapters.providers.base import ProviderError, Timeouts
from adapters.providers.failures import transport_error
from adapters.providers.head import FIELD_VALUE, encode_request
from adapters.providers.http11 import (
    ConnectionPool,
    Exchange,
    Plain,
    PoolLimits,
    RequestRejected,
    Target,
    TransportFailure,
    parse_target,
)
from core.model import FailureKind

ERROR_BODY_LIMIT = 64 * 1024
USER_AGENT = b"unified-model-gateway"
JSON = b"application/json"
EVENT_STREAM = b"text/event-stream"
REJECTED = "a request header is not valid in HTTP/1.1 (check the provider key)"


class HttpResponse(NamedTuple):
    status: int
    headers: Mapping[str, str]
    body: bytes


@define
class StreamResponse:
    status: int
    headers: Mapping[str, str]
    chunks: AsyncIterator[bytes]

    async def read(self, limit: int = ERROR_BODY_LIMIT) -> bytes:
        """The rest of the body (at most `limit` bytes); used for error responses."""
        data = bytearray()
        async for chunk in self.chunks:
            data += chunk
            if len(data) >= limit:
                break
        return bytes(data[:limit])


class Transport(Protocol):
    async def post_json(
        self, url: str, headers: Mapping[str, str], body: object, *, timeouts: Timeouts
    ) -> HttpResponse: ...

    def stream_post(
        self, url: str, headers: Mapping[str, str], body: object, *, timeouts: Timeouts
    ) -> AbstractAsyncContextManager[StreamResponse]: ...

    async def aclose(self) -> None: ...


_ENCODER = msgspec.json.Encoder()


def encode_json(body: object) -> bytes:
    """Compact UTF-8 JSON, in C: the bytes of `json.dumps(body, separators=(",", ":"),
    ensure_ascii=False)` encoded, but for a float's exponent (`1e16`, not `1e+16`)."""
    return _ENCODER.encode(body)


class _Chunks:
    """A streamed body piece by piece, each read bounded by the idle and total deadlines."""

    def __init__(
        self, exchange: Exchange, idle: float, deadline: float, secrets: tuple[str, ...]
    ) -> None:
        self._exchange = exchange
        self._idle = idle
        self._deadline = deadline
        self._secrets = secrets
        self._done = False
        self._now = trio.lowlevel.current_clock().current_time  # read every chunk: this run's clock itself

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        idle_at = self._now() + self._idle
        what = "waiting for the next chunk" if idle_at < self._deadline else "streaming (total)"
        try:
            chunk = await self._exchange.receive(min(idle_at, self._deadline), what)
        except TransportFailure as exc:
            self._done = True
            raise transport_error(exc, secrets=self._secrets) from None
        if not chunk:
            self._done = True
            raise StopAsyncIteration
        return chunk


# headers new on every call (adapters/tracing.py's `outgoing`): never part of a head's cache key
PER_CALL = frozenset({"traceparent", "tracestate"})
_VALUE_RE = re.compile(FIELD_VALUE)


def _per_call(fields: list[tuple[bytes, bytes]]) -> bytes | None:
    """The head lines of a call's trace context fields, as `encode_request` writes them;
    None if a value is not one `encode_request` accepts (then it decides)."""
    lines = b""
    for name, value in fields:
        if _VALUE_RE.fullmatch(value) is None:
            return None
        lines += b"%s: %s\r\n" % (name, value)
    return lines


class H11Transport:
    """`Transport` over one `http11.ConnectionPool` (keep-alive, bounded per origin)."""

    def __init__(
        self, *, limits: PoolLimits | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._pool = ConnectionPool(limits, ssl_context)
        self._targets: dict[str, Target] = {}
        # a plain head without its content-length line, by URL, accept and headers (`_head`)
        self._heads: dict[tuple[str, bytes, tuple[tuple[str, str], ...]], bytes] = {}

    @property
    def limits(self) -> PoolLimits:
        return self._pool.limits

    def _target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            try:
                target = parse_target(url)
            except ValueError as exc:
                raise ProviderError(
                    FailureKind.CONNECT, f"the provider URL is not usable: {exc}"
                ) from None
            if len(self._targets) < 1024:  # provider URLs are few; never grow without bound
                self._targets[url] = target
        return target

    async def _open(
        self, url: str, headers: Mapping[str, str], body: object, accept: bytes,
        timeouts: Timeouts, deadline: float,
    ) -> Exchange:
        target = self._target(url)
        payload = encode_json(body)
        length = b"%d" % len(payload)
        fields = [
            (b"host", target.authority),
            (b"user-agent", USER_AGENT),
            (b"content-type", JSON),
            (b"accept", accept),
        ]
        fields.extend((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items())
        fields.append((b"content-length", length))  # last: a head of the same call differs only there
        try:
            wire = self._head(url, accept, headers, target, fields, length)
            head = (Plain(wire, target.path, fields) if wire is not None
                    else h11.Request(method=b"POST", target=target.path, headers=fields))
            return await self._pool.open(
                target, head, payload, connect=timeouts.connect,
                first_byte=timeouts.first_byte, deadline=deadline,
            )
        except h11.LocalProtocolError:  # its text would quote the header: never passed on
            rejected = RequestRejected("encoding the request", REJECTED)
            raise transport_error(rejected) from None
        except TransportFailure as exc:
            raise transport_error(exc, secrets=tuple(headers.values())) from None

    def _head(self, url: str, accept: bytes, headers: Mapping[str, str], target: Target,
              fields: list[tuple[bytes, bytes]], length: bytes) -> bytes | None:
        """`encode_request(target.path, fields)`, its checks made once per URL, accept and
        headers: the head of a call with the same ones but another body differs only in
        its last line, the `content-length` (digits, which `encode_request` accepts).
        Trace context (`traceparent`, `tracestate`: new on every call) at the end of
        `headers` is left out of the key: its lines go between the cached lines and the
        `content-length`, each value checked as `encode_request` checks it."""
        items = tuple(headers.items())
        cut = len(items)
        while cut and items[cut - 1][0].lower() in PER_CALL:
            cut -= 1
        key = (url, accept, items if cut == len(items) else items[:cut])
        calls = fields[len(fields) - 1 - (len(items) - cut): -1]  # the per-call fields, encoded
        before = self._heads.get(key)
        if before is not None:
            lines = _per_call(calls)
            if lines is not None:
                return before + lines + b"content-length: " + length + b"\r\n\r\n"
        wire = encode_request(target.path, fields)
        if wire is not None and before is None and len(self._heads) < 1024:  # a few providers: bounded
            lines = _per_call(calls)
            if lines is not None:
                self._heads[key] = wire[: -len(b"content-length: \r\n\r\n") - len(length) - len(lines)]
        return wire

    async def post_json(
        self, url: str, headers: Mapping[str, str], body: object, *, timeouts: Timeouts
    ) -> HttpResponse:
        deadline = trio.current_time() + timeouts.total
        exchange = await self._open(url, headers, body, JSON, timeouts, deadline)
        data = bytearray()
        try:
            while True:
                by = min(deadline, trio.current_time() + timeouts.first_byte)
                chunk = await exchange.receive(by, "reading the response")
                if not chunk:
                    break
                data += chunk
        except TransportFailure as exc:
            raise transport_error(exc, secrets=tuple(headers.values())) from None
        finally:
            exchange.close()
        return HttpResponse(exchange.status, exchange.headers, bytes(data))

    @asynccontextmanager
    async def stream_post(
        self, url: str, headers: Mapping[str, str], body: object, *, timeouts: Timeouts
    ) -> AsyncIterator[StreamResponse]:
        deadline = trio.current_time() + timeouts.total
        exchange = await self._open(url, headers, body, EVENT_STREAM, timeouts, deadline)
        try:
            chunks = _Chunks(exchange, timeouts.idle, deadline, tuple(headers.values()))
            yield StreamResponse(exchange.status, exchange.headers, chunks)
        finally:
            exchange.close()

    async def aclose(self) -> None:
        await self._pool.aclose()
