"""Glue between the HTTP model routes and the request driver (adapters/driver.py).

Owns: turning the current Quart request into the driver's plain inputs and its events
into bytes. `open_run` gives the driver the caller's key, a body parser and the request
id, and opens the run (every refusal raises here, before any byte: the error handler
answers it in JSON); a sync route then answers `await run.collect()`; a streaming route
returns `sse_response(stream_body(services, run, framer))`, where a `StreamFramer` (one
per API surface) turns the driver's events into that surface's bytes. The driver ends
every stream with the surface's completion event or an explicit error event and writes
exactly one ledger row per request.
`NamedEventFramer` is the framer of the surfaces whose SSE events are named (Responses,
Anthropic Messages), around that surface's pure encoder; `sse_response` wraps a stream
body for every surface.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

import trio
from attrs import evolve
from quart import Response, current_app
from quart import request as http_request

from adapters.driver import Ingress, Run, new_id
from adapters.events import Done, RunEvent, RunFailed, Started
from adapters.execution import Execution
from adapters.providers.mock import SCENARIO_HEADER
from core.errors import GatewayError
from core.model import FinishReason, GatewayRequest, StreamEvent, TextDelta, ToolCallDelta, Usage
from core.sse import encode_comment, encode_event
from server.http import api_key_from_headers, json_body, to_json
from server.requestid import CLIENT_REQUEST_ID, REQUEST_ID
from server.services import Services
from server.streaming import pump


class StreamFramer(Protocol):
    """Turns one request's stream into one API surface's bytes."""

    keepalive: bytes

    def start(self, exe: Execution) -> bytes: ...

    def event(self, exe: Execution, event: StreamEvent) -> bytes: ...

    def finish(self, exe: Execution) -> bytes: ...

    def fail(self, exe: Execution, error: GatewayError) -> bytes: ...


Frames = list[tuple[str, dict[str, Any]]]


class NamedEventEncoder(Protocol):
    """A surface's pure stream encoder whose output is named SSE events (`event: x`)."""

    def start(self) -> Frames: ...

    def on_event(self, event: StreamEvent) -> Frames: ...

    def finish(
        self,
        usage: Usage | None = None,
        gateway: Mapping[str, Any] | None = None,
        finish_reason: FinishReason | None = None,
    ) -> Frames: ...

    def fail(self, error: GatewayError) -> Frames: ...


class NamedEventFramer:
    """The `StreamFramer` of the surfaces with named events (Responses, Anthropic Messages)."""

    keepalive = encode_comment("keep-alive")

    def __init__(self, encoder: NamedEventEncoder) -> None:
        self.encoder = encoder

    @staticmethod
    def _bytes(frames: Frames) -> bytes:
        return b"".join(encode_event(to_json(data), event=name) for name, data in frames)

    def start(self, exe: Execution) -> bytes:
        return self._bytes(self.encoder.start())

    def event(self, exe: Execution, event: StreamEvent) -> bytes:
        return self._bytes(self.encoder.on_event(event))

    def finish(self, exe: Execution) -> bytes:
        return self._bytes(
            self.encoder.finish(
                usage=exe.answer_usage, gateway=exe.gateway_info(), finish_reason=exe.finish_reason
            )
        )

    def fail(self, exe: Execution, error: GatewayError) -> bytes:
        return self._bytes(self.encoder.fail(error))


def sse_response(body: AsyncIterator[bytes], headers: dict[str, str]) -> Response:
    response = Response(
        body,
        content_type="text/event-stream; charset=utf-8",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no", **headers},
    )
    response.timeout = None  # Quart's RESPONSE_TIMEOUT would cut long streams
    return response


Parser = Callable[[dict[str, Any]], GatewayRequest]


def request_ids() -> tuple[str, str]:
    """(the gateway's own id, the id the client sees) of the current request."""
    scope = http_request.scope
    own = str(scope.get(REQUEST_ID) or new_id("req"))
    return own, str(scope.get(CLIENT_REQUEST_ID) or own)


async def open_run(services: Services, endpoint: str, parse: Parser) -> Run:
    """Authenticate, parse and admit the current HTTP request (see `Run.open`)."""

    async def parse_body() -> GatewayRequest:
        return with_scenario_header(parse(await json_body()))

    ingress = Ingress(
        request_id=request_ids()[0],
        endpoint=endpoint,
        parse=parse_body,
        token=api_key_from_headers(),
    )
    run = services.gateway.driver.run(ingress)
    await run.open()
    return run


def with_scenario_header(request: GatewayRequest) -> GatewayRequest:
    header = http_request.headers.get(SCENARIO_HEADER)
    if header is None or "mock_scenario" in request.metadata:
        return request
    return evolve(request, metadata={**request.metadata, "mock_scenario": header})


def frame(framer: StreamFramer, exe: Execution, event: RunEvent) -> bytes:
    """One driver event as `framer`'s bytes."""
    if isinstance(event, TextDelta | ToolCallDelta):
        return framer.event(exe, event)
    if isinstance(event, Started):
        return framer.start(exe)
    if isinstance(event, Done):
        return framer.finish(exe)
    if isinstance(event, RunFailed):
        return framer.fail(exe, event.error)
    return b""


def stream_body(services: Services, run: Run, framer: StreamFramer) -> AsyncIterator[bytes]:
    exe = run.exe

    async def produce(send: trio.MemorySendChannel[bytes]) -> None:
        async def emit(event: RunEvent) -> None:
            chunk = frame(framer, exe, event)
            if chunk:
                await send.send(chunk)

        try:
            await run.drive(emit)
        finally:
            await run.close()

    return pump(
        current_app.nursery,  # type: ignore[attr-defined]
        produce,
        keepalive=services.settings.limits.keepalive_seconds,
        keepalive_chunk=framer.keepalive,
    )
