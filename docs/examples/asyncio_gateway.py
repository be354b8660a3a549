"""A tiny gateway on asyncio that reuses the core's decisions (docs/reuse.md walks through it).

Owns: nothing of the product; it shows that `core/` is runtime-free. It drives the same
pure machines the Trio gateway drives — routing, the attempt (fallback) machine, rate
buckets, budget grants and settlement, billing, stream metering, the request outcome and
the SSE codec — from a plain asyncio program with its own small HTTP/1.1 client. No Trio,
no httpx, no storage: state lives in dicts this program owns.

It starts two local upstreams that speak OpenAI's streaming Chat Completions format:
`alpha` answers 503 (a provider outage), `beta` streams an answer. The catalog's model
`demo` is served by both, `alpha` first (it is cheaper), so the attempt machine falls
back to `beta`. Run it: `python docs/examples/asyncio_gateway.py`; it prints the streamed
text and a JSON summary line (tests/test_reuse_example.py checks both).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from decimal import Decimal

from core import attempts, billing, budget, grants, metering, outcome, ratelimit, routing
from core.catalog import Deployment, catalog_from_data
from core.errors import GatewayError
from core.model import (
    FailureKind,
    GatewayRequest,
    Message,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    Usage,
    UsageReport,
)
from core.sse import SSEDecoder, encode_event
from core.tokens import estimate_request_tokens

ANSWER = ("Hello", " from", " an", " asyncio", " gateway", ".")


# ---- two upstreams: one down, one streaming (OpenAI Chat Completions SSE) --------------


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return await reader.readexactly(length)


async def outage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    body = b'{"error": {"message": "overloaded", "type": "server_error"}}'
    writer.write(
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    writer.close()


async def streamer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request = json.loads(await _read_request(reader))
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
    )
    for piece in ANSWER:
        chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        writer.write(encode_event(json.dumps(chunk)))
        await writer.drain()
        await asyncio.sleep(0.005)
    prompt = sum(len(m["content"].split()) for m in request["messages"])
    done = {
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": len(ANSWER)},
    }
    writer.write(encode_event(json.dumps(done)) + encode_event("[DONE]"))
    await writer.drain()
    writer.close()


# ---- the program's own HTTP client: one POST, the SSE body decoded as it arrives --------


class UpstreamFailed(Exception):
    def __init__(self, kind: FailureKind) -> None:
        super().__init__(kind.value)
        self.kind = kind


def failure_kind(status: int) -> FailureKind:
    """The core's failure kind for an upstream HTTP status (a small part of the real table)."""
    table = {429: FailureKind.RATE_LIMITED, 503: FailureKind.OVERLOADED, 529: FailureKind.OVERLOADED}
    return table.get(status, FailureKind.SERVER_ERROR if status >= 500 else FailureKind.BAD_REQUEST)


async def call(
    port: int, deployment: Deployment, request: GatewayRequest, cap: int | None
) -> AsyncIterator[StreamEvent]:
    """Stream one attempt: yields core stream events; raises UpstreamFailed(kind)."""
    payload = {
        "model": deployment.upstream_model,
        "stream": True,
        "messages": [{"role": m.role, "content": m.text()} for m in request.messages],
        **({"max_tokens": cap} if cap is not None else {}),
    }
    body = json.dumps(payload).encode()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as err:
        raise UpstreamFailed(FailureKind.CONNECT) from err
    try:
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            + f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            raise UpstreamFailed(failure_kind(status))
        decoder = SSEDecoder()
        while chunk := await reader.read(4096):
            for event in decoder.feed(chunk):
                if event.data == "[DONE]":
                    return
                data = json.loads(event.data)
                if "usage" in data:
                    u = data["usage"]
                    yield UsageReport(Usage(u["prompt_tokens"], u["completion_tokens"]))
                for choice in data["choices"]:
                    if text := choice["delta"].get("content"):
                        yield TextDelta(text)
                    if choice.get("finish_reason"):
                        yield StreamEnd(choice["finish_reason"])
        raise UpstreamFailed(FailureKind.STREAM_CUT)
    finally:
        writer.close()


# ---- the gateway: the same decisions as adapters/driver.py, on asyncio -------------------

CATALOG = catalog_from_data(
    {
        "models": {
            "demo": {
                "owned_by": "example",
                "created": 0,
                "deployments": [
                    {
                        "provider": "alpha",
                        "upstream_model": "demo-small",
                        "context_window": 8192,
                        "max_output_tokens": 256,
                        "price": {"input": "1.00", "output": "2.00"},
                    },
                    {
                        "provider": "beta",
                        "upstream_model": "demo-large",
                        "context_window": 8192,
                        "max_output_tokens": 256,
                        "price": {"input": "3.00", "output": "6.00"},
                    },
                ],
            }
        }
    }
)


class Gateway:
    """State the Trio gateway keeps in storage, kept here in plain attributes."""

    def __init__(self, ports: dict[str, int], budget_usd: Decimal) -> None:
        self.ports = ports
        self.buckets: dict[str, ratelimit.Bucket] = {}
        self.budget = budget.BudgetState(limit=budget_usd)
        self.loop = asyncio.get_running_loop()

    def now(self) -> float:
        return self.loop.time()

    async def run(self, request_id: str, request: GatewayRequest) -> dict[str, object]:
        input_tokens = estimate_request_tokens(request)
        needs = (
            ratelimit.Need("requests", 60, 1),
            ratelimit.Need("tokens", 10_000, metering.charged_tokens(input_tokens, request.max_output_tokens)),
        )
        admission, self.buckets = ratelimit.take_all(needs, self.buckets, self.now())
        if not isinstance(admission, ratelimit.Admitted):
            return {"status": "rate_limited"}
        try:
            plan = routing.plan(
                request, CATALOG, {}, now=self.now(), draw=0.0, input_tokens=input_tokens
            )
            return await self.attempt_loop(request_id, request, input_tokens, plan)
        except GatewayError as err:  # a refusal (unknown model, budget): the request failed
            return {"status": outcome.outcome(outcome.Failed(err)).status, "error": err.code}

    async def attempt_loop(
        self, request_id: str, request: GatewayRequest, input_tokens: int, plan: routing.RoutePlan
    ) -> dict[str, object]:
        """Perform every action of the attempt machine until it finishes or fails."""
        state, actions = attempts.start(plan.deployments, attempts.AttemptPolicy(), self.now())
        spent = Decimal(0)
        text: list[str] = []
        while True:
            event: attempts.Event | None = None
            for action in actions:
                if isinstance(action, attempts.CallProvider):
                    event, cost, state = await self.attempt(
                        request_id, request, input_tokens, state, action, text
                    )
                    spent += cost
                elif isinstance(action, attempts.SleepUntil):
                    await asyncio.sleep(max(0.0, action.at - self.now()))
                    event = attempts.Woke()
                elif isinstance(action, attempts.Fail):
                    raise action.error
                elif isinstance(action, attempts.Finish):
                    return {
                        "status": outcome.outcome(outcome.Answered()).status,
                        "text": "".join(text),
                        "attempts": [[r.provider, r.outcome] for r in state.records],
                        "cost_usd": billing.format_usd(spent),
                        "budget_spent_usd": str(self.budget.spent),
                        "budget_reserved_usd": str(self.budget.reserved),
                    }
            assert event is not None, "the attempt machine gave no action to act on"
            state, actions = attempts.step(state, event, self.now())

    async def attempt(
        self,
        request_id: str,
        request: GatewayRequest,
        input_tokens: int,
        state: attempts.Attempts,
        action: attempts.CallProvider,
        text: list[str],
    ) -> tuple[attempts.Event, Decimal, attempts.Attempts]:
        """One provider call under a budget grant; returns the machine's event and the cost."""
        d = action.deployment
        rid = grants.rid(request_id, action.attempt)
        ask = grants.Ask(
            rid=rid,
            price=d.price,
            input_tokens=input_tokens,
            wanted=grants.wanted_output(request.max_output_tokens, d.max_output_tokens),
            capped=request.max_output_tokens is not None,
            request_remaining=None,
        )
        decision, after = grants.grant(ask, self.budget)
        assert after is not None
        self.budget = after
        if isinstance(decision, grants.Refused):
            raise decision.error
        meter = metering.Meter(input_estimate=input_tokens, cap=decision.max_output_tokens)
        first = True
        try:
            async for item in call(self.ports[d.provider], d, request, decision.max_output_tokens):
                meter = metering.observe(meter, item)
                if isinstance(item, TextDelta):
                    if first:
                        # the first chunk reaches the client: no fallback from here on
                        first = False
                        state, _ = attempts.step(state, attempts.FirstChunk(), self.now())
                    text.append(item.text)
                    print(item.text, end="", flush=True)
        except UpstreamFailed as failed:
            self.budget = budget.release(self.budget, rid)
            return attempts.AttemptFailed(failed.kind), Decimal(0), state
        usage = metering.consumed(meter) or Usage(input_tokens=input_tokens)
        cost = billing.cost(usage, d.price)
        _, self.budget = budget.settle(self.budget, rid, cost)
        return attempts.Completed(usage), cost, state


async def main() -> int:
    alpha = await asyncio.start_server(outage, "127.0.0.1", 0)
    beta = await asyncio.start_server(streamer, "127.0.0.1", 0)
    ports = {
        "alpha": alpha.sockets[0].getsockname()[1],
        "beta": beta.sockets[0].getsockname()[1],
    }
    async with alpha, beta:
        gateway = Gateway(ports, budget_usd=Decimal("0.05"))
        request = GatewayRequest(
            model="demo",
            messages=(Message(role="user", content=(TextPart("Say hello from asyncio"),)),),
            max_output_tokens=64,
            stream=True,
        )
        summary = await gateway.run("req_example", request)
    print()
    print(json.dumps({**summary, "trio_imported": "trio" in sys.modules}))
    return 0 if summary["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
