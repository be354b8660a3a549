"""Glue between routes and the gateway: one request, whole or streamed, always recorded.

Owns: the request flow every model route shares. `admit` authenticates, parses (a parse
failure of an authenticated caller is still recorded), takes limits and plans; `whole`
runs it and returns the completion; `stream_body` runs it as a stream through a
`StreamFramer` (one per API surface: it turns core stream events into that surface's
bytes) and guarantees that a stream either ends with the surface's completion event or
with an explicit error event. Every path writes exactly one ledger row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, Protocol

import trio
from attrs import evolve
from quart import current_app
from quart import request as http_request

from adapters.execution import Execution
from adapters.providers.mock import SCENARIO_HEADER, MockProvider, check_scenario
from core.errors import GatewayError, ServiceUnavailable
from core.model import Completion, GatewayRequest, StreamEvent
from server.auth import require_key
from server.http import json_body
from server.services import Services
from server.streaming import pump


class StreamFramer(Protocol):
    """Turns one request's stream into one API surface's bytes."""

    keepalive: bytes

    def start(self, exe: Execution) -> bytes: ...

    def event(self, exe: Execution, event: StreamEvent) -> bytes: ...

    def finish(self, exe: Execution) -> bytes: ...

    def fail(self, exe: Execution, error: GatewayError) -> bytes: ...


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
