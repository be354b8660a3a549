"""Glue between the model routes and the request driver (adapters/driver.py), no framework.

Owns: what a model route gets and gives. It gets an `Incoming` (path, lower-cased
headers, a body reader, the request ids: plain values, filled by `server/hot.py` at the
ASGI level) and gives a `Whole` JSON answer or a `Streamed` one (the run, the surface's
framer, the headers). `open_run` gives the driver the caller's key, a body parser and
the request id, and opens the run (every refusal raises here, before any byte); a sync
route then answers `await run.collect()`; a streaming route returns
`Streamed(run, framer, headers)`, and `server/streaming.py` writes the driver's events
framed by its `StreamFramer` (one per API surface). The driver ends every stream with
the surface's completion event or an explicit error event and writes exactly one ledger
row per request.
`NamedEventFramer` is the framer of the surfaces whose SSE events are named (Responses,
Anthropic Messages), around that surface's pure encoder; with `ids=True` each event
carries an `id:` line, its `sequence_number` (Responses), and with a `recorder` each
event is also stored as it was sent (adapters/stream_log.py), so the stream can be
resumed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from attrs import evolve, frozen

from adapters.afterwards import Afterwards
from adapters.driver import Ingress, Run
from adapters.events import Done, Pieces, RunEvent, RunFailed, Started
from adapters.execution import Execution
from adapters.providers.mock import SCENARIO_HEADER
from adapters.stopwatch import Stopwatch
from adapters.stream_log import Recorder
from core.errors import GatewayError
from core.model import FinishReason, GatewayRequest, StreamEvent, TextDelta, ToolCallDelta, Usage
from core.sse import encode_comment, encode_event
from server.http import api_key_in, json_in, to_json
from server.services import Services


class StreamFramer(Protocol):
    """Turns one request's stream into one API surface's bytes."""

    keepalive: bytes

    def start(self, exe: Execution) -> bytes: ...

    def event(self, exe: Execution, event: StreamEvent) -> bytes: ...

    def finish(self, exe: Execution) -> bytes: ...

    def fail(self, exe: Execution, error: GatewayError) -> bytes: ...


Frames = list[tuple[str, dict[str, Any]]]
# The ASGI scope key of a watcher of the request's run (`Ingress.watch`), set by an outer
# middleware (server/idempotent.py).
WATCH = "umg.watch"


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

    def __init__(
        self, encoder: NamedEventEncoder, *, ids: bool = False, recorder: Recorder | None = None
    ) -> None:
        self.encoder = encoder
        self.ids = ids
        self.recorder = recorder

    def _bytes(self, frames: Frames) -> bytes:
        if not self.ids:
            return b"".join(encode_event(to_json(data), event=name) for name, data in frames)
        out = []
        for name, data in frames:
            text, seq = to_json(data), int(data["sequence_number"])
            out.append(encode_event(text, event=name, id=str(seq)))
            if self.recorder is not None:
                self.recorder.add(seq, name, text)
        return b"".join(out)

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


@frozen
class Incoming:
    """One model request as the route sees it: plain values, no framework objects."""

    path: str
    headers: Mapping[str, str]  # lower-cased names; of a repeated header, the first value
    read_body: Callable[[], Awaitable[bytes]]  # waits for the whole body (BodyTimeout)
    request_id: str  # the gateway's own id: the ledger row's
    client_request_id: str  # the id the client sees (its x-request-id, or ours)
    watch: Callable[[Execution], None] | None = None  # scope[WATCH]: Ingress.watch
    stopwatch: Stopwatch | None = None  # started on arrival (the gateway's overhead)
    afterwards: Afterwards | None = None  # done after the answer's last byte (Ingress.afterwards)


class BodyTimeout(Exception):
    """The request body did not arrive in time (a 408, before any ledger row)."""


@frozen
class Whole:
    """A JSON answer (200)."""

    body: bytes
    headers: Mapping[str, str]


@frozen
class Streamed:
    """An SSE answer: the opened run, framed by `framer`. With a `recorder` (the one the
    framer stores its events in) the run may go on when the client goes away."""

    run: Run
    framer: StreamFramer
    headers: Mapping[str, str]
    recorder: Recorder | None = None


Answer = Whole | Streamed


Parser = Callable[[dict[str, Any]], GatewayRequest]
TRACE_HEADERS = ("traceparent", "tracestate")  # W3C trace context, handed to observers


async def open_run(services: Services, incoming: Incoming, endpoint: str, parse: Parser) -> Run:
    """Authenticate, parse and admit `incoming` (see `Run.open`)."""

    async def parse_body() -> GatewayRequest:
        body = await json_in(incoming.headers, incoming.read_body)
        return with_scenario_header(parse(body), incoming.headers)

    ingress = Ingress(
        request_id=incoming.request_id,
        endpoint=endpoint,
        parse=parse_body,
        token=api_key_in(incoming.headers),
        watch=incoming.watch,
        client_request_id=incoming.client_request_id,
        trace_headers={h: incoming.headers[h] for h in TRACE_HEADERS if h in incoming.headers},
        stopwatch=incoming.stopwatch,
        afterwards=incoming.afterwards,
    )
    run = services.gateway.driver.run(ingress)
    await run.open()
    return run


def with_scenario_header(request: GatewayRequest, headers: Mapping[str, str]) -> GatewayRequest:
    header = headers.get(SCENARIO_HEADER)
    if header is None or "mock_scenario" in request.metadata:
        return request
    return evolve(request, metadata={**request.metadata, "mock_scenario": header})


def frame(framer: StreamFramer, exe: Execution, event: RunEvent) -> bytes:
    """One driver event as `framer`'s bytes."""
    if type(event) is TextDelta or type(event) is ToolCallDelta:  # nearly every event
        return framer.event(exe, event)
    if isinstance(event, Pieces):  # one upstream read's pieces: their frames, in one write
        return b"".join([framer.event(exe, item) for item in event.items])
    if isinstance(event, Started):
        return framer.start(exe)
    if isinstance(event, Done):
        return framer.finish(exe)
    if isinstance(event, RunFailed):
        return framer.fail(exe, event.error)
    return b""
