"""Glue between routes and the gateway: one request, whole or streamed, always recorded.

Owns: the request flow every model route shares. `admit` authenticates, parses (a parse
failure of an authenticated caller is still recorded), takes limits and plans; `whole`
runs it and returns the completion; `stream_body` runs it as a stream through a
`StreamFramer` (one per API surface: it turns core stream events into that surface's
bytes) and guarantees that a stream either ends with the surface's completion event or
with an explicit error event. Every path writes exactly one ledger row.
`NamedEventFramer` is the framer of the surfaces whose SSE events are named (Responses,
Anthropic Messages), around that surface's pure encoder; `sse_response` wraps a stream
body for every surface.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from typing import Any, Protocol

import trio
from attrs import evolve
from quart import Response, current_app
from quart import request as http_request

from adapters.execution import Execution
from adapters.providers.mock import SCENARIO_HEADER, MockProvider, check_scenario
from core.errors import GatewayError, ServiceUnavailable
from core.model import Completion, FinishReason, GatewayRequest, StreamEvent, Usage
from core.sse import encode_comment, encode_event
from server.auth import require_key
from server.http import json_body, to_json
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


async def admit(services: Services, endpoint: str, parse: Parser) -> Execution:
    """Authenticate, parse and admit; raises GatewayError (already recorded if authenticated)."""
    key = await require_key(services)
    gateway = services.gateway
    try:
        body = await json_body()
        request = with_scenario_header(parse(body))
    except GatewayError as err:
        await gateway.record_rejected(key, endpoint, err)
        raise
    exe = gateway.start(key, request, endpoint)
    try:
        await gateway.admit(exe)
        assert exe.plan is not None
        if any(isinstance(gateway.providers.get(d.provider), MockProvider) for d in exe.plan.deployments):
            check_scenario(request)
    except GatewayError as err:
        await gateway.record(exe, err)
        raise
    return exe


def with_scenario_header(request: GatewayRequest) -> GatewayRequest:
    header = http_request.headers.get(SCENARIO_HEADER)
    if header is None or "mock_scenario" in request.metadata:
        return request
    return evolve(request, metadata={**request.metadata, "mock_scenario": header})


async def whole(services: Services, exe: Execution) -> Completion:
    try:
        return await services.gateway.complete(exe)
    finally:
        await services.gateway.record(exe)


async def _produce(
    services: Services,
    exe: Execution,
    framer: StreamFramer,
    send: trio.MemorySendChannel[bytes],
    model_scope: trio.CancelScope,
) -> None:
    gateway = services.gateway
    failure: GatewayError | None = None
    try:
        await send.send(framer.start(exe))
        with model_scope:
            async with aclosing(gateway.stream(exe)) as events:
                async for event in events:
                    chunk = framer.event(exe, event)
                    if chunk:
                        await send.send(chunk)
        if model_scope.cancelled_caught:
            failure = ServiceUnavailable("The gateway is shutting down; the answer was cut short")
            exe.error = failure
    except GatewayError as err:
        failure = err
    finally:
        await gateway.record(exe, failure)
    await send.send(framer.fail(exe, failure) if failure else framer.finish(exe))


def stream_body(services: Services, exe: Execution, framer: StreamFramer) -> AsyncIterator[bytes]:
    async def produce(send: trio.MemorySendChannel[bytes], model_scope: trio.CancelScope) -> None:
        await _produce(services, exe, framer, send, model_scope)

    return pump(
        current_app.nursery,  # type: ignore[attr-defined]
        services.streams,
        produce,
        keepalive=services.settings.limits.keepalive_seconds,
        keepalive_chunk=framer.keepalive,
    )
