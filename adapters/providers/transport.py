"""The HTTP transport the provider adapters speak through: one small, swappable interface.

Owns: sending a JSON POST and getting back either the whole answer or a streamed body,
with the gateway's four timeouts, and translating every transport exception into a
`ProviderError` at this boundary (mapping table: `failures.TRANSPORT_KINDS`).

Interface (`Transport`, a Protocol, so a faster client can replace httpx later):
- `await post_json(url, headers, body, *, timeouts) -> HttpResponse(status, headers, body)`
- `async with stream_post(url, headers, body, *, timeouts) as r:` gives a `StreamResponse`
  with `status`, `headers`, `chunks` (an async iterator of bytes) and `await r.read()`.
  Leaving the block (normally, by error, by cancellation) closes the upstream response;
  an unfinished body is never returned to the pool, so the connection is closed.

Timeouts (`base.Timeouts`):
- connect: httpx's connect (and pool) timeout.
- first byte: httpx's read timeout while waiting for the response headers, and a trio
  deadline of connect + first_byte around the whole headers phase.
- idle: enforced per chunk with `trio.fail_at` (and httpx's read timeout is switched to
  it once the headers are in); no cancel scope is ever held open across a `yield` to
  the caller, so a caller's own work is never cancelled by our deadlines.
- total: a trio deadline over the whole call (headers and every chunk).
Header names in responses are lower-case. Response bodies in errors are capped.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import NamedTuple, Protocol

import httpx
import trio
from attrs import define

from adapters.providers.base import ProviderError, Timeouts
from adapters.providers.failures import transport_error
from core.model import FailureKind

ERROR_BODY_LIMIT = 64 * 1024


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


def encode_json(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def default_limits() -> httpx.Limits:
    return httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=30)


class _Chunks:
    """Reads an httpx body chunk by chunk, each read bounded by idle and total deadlines."""

    def __init__(self, response: httpx.Response, idle: float, deadline: float) -> None:
        self._source = response.aiter_bytes()
        self._idle = idle
        self._deadline = deadline
        self._done = False

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        idle_at = trio.current_time() + self._idle
        what = "waiting for the next chunk" if idle_at < self._deadline else "streaming (total)"
        try:
            with trio.fail_at(min(idle_at, self._deadline)):
                return await self._source.__anext__()
        except StopAsyncIteration:
            self._done = True
            raise
        except (httpx.TransportError, trio.TooSlowError) as exc:
            self._done = True
            err = transport_error(exc, what)
            if isinstance(exc, httpx.TransportError) and err.kind is FailureKind.CONNECT:
                err = ProviderError(FailureKind.STREAM_CUT, err.message)
            raise err from None


def _set_read_timeout(request: httpx.Request, seconds: float) -> None:
    """From now on httpx's per-read timeout is the idle one (it was first_byte).

    httpcore reads `extensions["timeout"]["read"]` when the body iteration starts, and
    httpx hands it the same dict; if a future version copies it, reads stay bounded by
    first_byte as well as by our per-chunk trio deadline (still correct, only stricter).
    """
    timeout = request.extensions.get("timeout")
    if isinstance(timeout, dict):
        timeout["read"] = seconds


class HttpxTransport:
    """`Transport` over one shared `httpx.AsyncClient` (connection pooling via Limits)."""

    def __init__(
        self, client: httpx.AsyncClient | None = None, *, limits: httpx.Limits | None = None
    ) -> None:
        self._client = client or httpx.AsyncClient(limits=limits or default_limits())

    @staticmethod
    def _timeout(timeouts: Timeouts, read: float) -> httpx.Timeout:
        return httpx.Timeout(
            connect=timeouts.connect, read=read, write=timeouts.first_byte, pool=timeouts.connect
        )

    def _request(
        self, url: str, headers: Mapping[str, str], body: object, timeout: httpx.Timeout
    ) -> httpx.Request:
        all_headers = {"content-type": "application/json", "accept": "application/json"}
        all_headers.update(headers)
        return self._client.build_request(
            "POST", url, headers=all_headers, content=encode_json(body), timeout=timeout
        )

    async def post_json(
        self, url: str, headers: Mapping[str, str], body: object, *, timeouts: Timeouts
    ) -> HttpResponse:
        request = self._request(url, headers, body, self._timeout(timeouts, timeouts.first_byte))
        try:
            with trio.fail_after(timeouts.total):
                response = await self._client.send(request)
        except (httpx.TransportError, trio.TooSlowError) as exc:
            raise transport_error(exc, "waiting for the response") from None
        return HttpResponse(response.status_code, dict(response.headers.items()), response.content)

    @asynccontextmanager
    async def stream_post(
        self, url: str, headers: Mapping[str, str], body: object, *, timeouts: Timeouts
    ) -> AsyncIterator[StreamResponse]:
        start = trio.current_time()
        deadline = start + timeouts.total
        request = self._request(url, headers, body, self._timeout(timeouts, timeouts.first_byte))
        request.headers["accept"] = "text/event-stream"
        try:
            with trio.fail_at(min(deadline, start + timeouts.connect + timeouts.first_byte)):
                response = await self._client.send(request, stream=True)
        except (httpx.TransportError, trio.TooSlowError) as exc:
            raise transport_error(exc, "waiting for the response headers") from None
        _set_read_timeout(request, timeouts.idle)
        try:
            yield StreamResponse(
                response.status_code,
                dict(response.headers.items()),
                _Chunks(response, timeouts.idle, deadline),
            )
        finally:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 5):
                await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()
