"""Every error the gateway sends carries the request id the client sees (issue 9).

One table per way an error reaches a client, each row a distinct error path:
- HTTP error bodies of the app and the hot routes (400, 401, 402, 404, 405, 413, 426,
  429), in the OpenAI shape (`error.request_id`) or Anthropic's on `/v1/messages`
  (`request_id` beside `error`);
- the body middleware's refusals (413 on `Content-Length` and chunked, 503 busy, 408
  late), driven at the ASGI level with an autojump clock, on both shapes;
- a stream that fails after it began, on each SSE surface (Chat's `data: {"error"}`,
  Responses' `error` and `response.failed`, Messages' `event: error`);
- WebSocket `error` frames (a bad message: the handshake's id; a request: its own id,
  also in `response.failed`).
On HTTP the id is the client's `x-request-id` when it sent a sane one, so each request
here sends its own and checks that one comes back in the header and in the body.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from server.bodylimit import BodyBudget, BodyLimit
from server.requestid import RequestIds
from tests.server.conftest import Running

Check = Callable[[dict[str, Any]], str | None]


def openai_id(body: dict[str, Any]) -> str | None:
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code", "request_id"}, body
    return body["error"]["request_id"]


def anthropic_id(body: dict[str, Any]) -> str | None:
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    return body["request_id"]


def shape_of(path: str) -> Check:
    return anthropic_id if path.startswith("/v1/messages") else openai_id


CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
RESPONSES = {"model": "gpt-4.1", "input": "hi"}
MESSAGES = {"model": "gpt-4.1", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
BODIES = {"/v1/chat/completions": CHAT, "/v1/responses": RESPONSES, "/v1/messages": MESSAGES}

# (name, method, path, body, key: "good" | "none" | "bad" | "broke" | "slow", status)
HTTP_ERRORS: list[tuple[str, str, str, Any, str, int]] = [
    *[(f"bad-json{p}", "POST", p, b"{nope", "good", 400) for p in BODIES],
    *[(f"bad-field{p}", "POST", p, {**b, "model": 7}, "good", 400) for p, b in BODIES.items()],
    *[(f"no-key{p}", "POST", p, b, "none", 401) for p, b in BODIES.items()],
    *[(f"bad-key{p}", "POST", p, b, "bad", 401) for p, b in BODIES.items()],
    *[(f"unknown-model{p}", "POST", p, {**b, "model": "no-such"}, "good", 404) for p, b in BODIES.items()],
    *[(f"budget{p}", "POST", p, {**b, "stream": True}, "broke", 402) for p, b in BODIES.items()],
    ("budget-stream-path", "POST", "/v1/responses/stream", RESPONSES, "broke", 402),
    ("rate-limited", "POST", "/v1/responses", RESPONSES, "slow", 429),
    ("rate-limited-messages", "POST", "/v1/messages", MESSAGES, "slow", 429),
    ("no-route", "GET", "/v1/nowhere", None, "good", 404),
    ("wrong-method", "GET", "/v1/chat/completions", None, "good", 405),
    ("wrong-method-messages", "GET", "/v1/messages", None, "good", 405),
    ("no-such-job", "GET", "/v1/jobs/job_missing", None, "good", 404),
    ("bad-query", "GET", "/v1/jobs?limit=%C2%B2", None, "good", 400),
    ("ws-over-http", "GET", "/v1/responses/ws", None, "good", 426),
    ("admin-for-tenant", "GET", "/v1/admin/keys", None, "good", 403),
    ("count-tokens", "POST", "/v1/messages/count_tokens", {"model": 1}, "good", 400),
]


async def keys_for(gateway: Running) -> dict[str, str | None]:
    return {
        "good": gateway.key,
        "none": None,
        "bad": "umg-not-a-key",
        "broke": await gateway.new_key(budget_usd=Decimal("0")),
        "slow": await gateway.new_key(rpm=1),
    }


async def test_every_http_error_body_carries_the_request_id(gateway: Running) -> None:
    keys = await keys_for(gateway)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        # The rpm=1 key spends its one request first, so the table's request is the 429.
        warm = await client.post("/v1/responses", json=RESPONSES,
                                 headers={"authorization": f"Bearer {keys['slow']}"})  # fmt: skip
        assert warm.status_code == 200, warm.text
        for n, (name, method, path, body, key, status) in enumerate(HTTP_ERRORS):
            rid = f"err-{n}"
            headers = {"x-request-id": rid}
            if keys[key] is not None:
                headers["authorization"] = f"Bearer {keys[key]}"
            content = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
            if content is not None:
                headers["content-type"] = "application/json"
            r = await client.request(method, path, content=content, headers=headers)
            assert r.status_code == status, (name, r.status_code, r.text)
            assert r.headers["x-request-id"] == rid, name
            assert shape_of(path)(r.json()) == rid, (name, r.text)


async def test_without_a_client_id_the_body_carries_the_gateways(gateway: Running) -> None:
    async with gateway.client() as client:
        r = await client.post("/v1/messages", json={"model": "no-such"},
                              headers={"x-request-id": "not sane!"})  # fmt: skip
    assert r.status_code == 400
    assert r.headers["x-request-id"].startswith("req_")
    assert anthropic_id(r.json()) == r.headers["x-request-id"]


# -- the body middleware's refusals, at the ASGI level ---------------------------------------

LIMIT = 64


async def never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("a refused body reached the app")


async def refuse(path: str, head: list[tuple[bytes, bytes]], chunks: list[bytes], *,
                 budget: int = 1024, stall: bool = False) -> tuple[int, dict[bytes, bytes], Any]:  # fmt: skip
    """One request through RequestIds(BodyLimit(app)): its status, headers and JSON body."""
    app = RequestIds(BodyLimit(never_called, LIMIT, 5.0, BodyBudget(budget)))
    scope = {"type": "http", "path": path, "method": "POST",
             "headers": [(b"x-request-id", b"mw-1"), *head]}  # fmt: skip
    pending = [{"type": "http.request", "body": c, "more_body": stall or i < len(chunks) - 1}
               for i, c in enumerate(chunks)]  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        if stall:
            await trio.sleep_forever()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent
    return start["status"], dict(start["headers"]), json.loads(body["body"])


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/messages"])
@pytest.mark.parametrize(
    ("case", "status"), [("declared", 413), ("chunked", 413), ("busy", 503), ("late", 408)]
)
async def test_body_refusals_carry_the_request_id(
    path: str, case: str, status: int, autojump_clock: trio.testing.MockClock
) -> None:
    big = str(LIMIT + 1).encode()
    situations: dict[str, tuple[list[tuple[bytes, bytes]], list[bytes], dict[str, Any]]] = {
        "declared": ([(b"content-length", big)], [], {}),
        "chunked": ([(b"transfer-encoding", b"chunked")], [b"x" * 40, b"x" * 40], {}),
        "busy": ([(b"content-length", b"10")], [b"x" * 10], {"budget": 5}),
        "late": ([(b"content-length", b"10")], [b"x" * 3], {"stall": True}),
    }
    head, chunks, extra = situations[case]
    got, headers, body = await refuse(path, head, [*chunks] or [b""], **extra)
    assert got == status, body
    assert headers[b"x-request-id"] == b"mw-1" and headers[b"connection"] == b"close"
    assert shape_of(path)(body) == "mw-1"


# -- streams that fail after they began -------------------------------------------------------


def sse_datas(text: str) -> list[tuple[str | None, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        name = None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and line != "data: [DONE]":
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses/stream", "/v1/messages"])
async def test_a_failed_stream_says_the_request_id(gateway: Running, path: str) -> None:
    body = {**BODIES.get(path, RESPONSES), "stream": True}
    headers = {"x-request-id": "stream-1", "x-umg-mock-scenario": "cut_after=2"}
    async with gateway.client() as client:
        r = await client.post(path, json=body, headers=headers)
    assert r.status_code == 200 and r.headers["x-request-id"] == "stream-1"
    events = sse_datas(r.text)
    if path == "/v1/chat/completions":
        assert openai_id(events[-1][1]) == "stream-1"
    elif path == "/v1/messages":
        assert events[-1][0] == "error" and anthropic_id(events[-1][1]) == "stream-1"
    else:
        (name, error), (last, failed) = events[-2:]
        assert (name, last) == ("error", "response.failed")
        assert error["request_id"] == failed["response"]["error"]["request_id"] == "stream-1"
        assert error["code"] == failed["response"]["error"]["code"]


# -- WebSocket error frames -------------------------------------------------------------------


async def test_websocket_error_frames_carry_a_request_id(gateway: Running) -> None:
    url = gateway.url.replace("http://", "ws://", 1) + "/v1/responses/ws"
    headers = [(b"authorization", f"Bearer {gateway.key}".encode()), (b"x-request-id", b"ws-1")]
    async with open_websocket_url(url, extra_headers=headers) as ws:
        with trio.fail_after(10):
            await ws.send_message("not json")
            not_json = json.loads(await ws.get_message())
            await ws.send_message(json.dumps({"type": "response.create", "id": "a",
                                              "request": {"input": "no model"}}))  # fmt: skip
            refused = json.loads(await ws.get_message())
            request = {"model": "gpt-4.1", "input": "one two three",
                       "metadata": {"mock_scenario": "cut_after=2"}}  # fmt: skip
            await ws.send_message(json.dumps({"type": "response.create", "id": "b", "request": request}))
            frames = []
            while not frames or frames[-1]["type"] != "response.failed":
                frames.append(json.loads(await ws.get_message()))
    assert not_json["type"] == "error" and not_json["request_id"] == "ws-1"
    # A request that was created has its own id (it keys its ledger row), not the handshake's.
    assert refused["type"] == "error" and refused["request_id"].startswith("req_")
    error, failed = frames[-2:]
    own = "req_" + failed["response"]["id"].removeprefix("resp_")
    assert error["type"] == "error" and error["request_id"] == own
    assert failed["response"]["error"]["request_id"] == own
    assert error["code"] == failed["response"]["error"]["code"]
