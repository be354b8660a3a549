"""End to end: hostile JSON on every model route, on SQLite and on Postgres.

Each body below once got a 500 (or worse: a 500 with a ledger row saying `ok`, or a
stream cut and logged as `client_closed`). Now a number with a fraction simply works, and
everything else is a 4xx naming the problem, with exactly one ledger row whose status
matches what the client saw (a WebSocket frame that cannot be read at all gets an error
frame without an id and no row: it is not a request). Routes: chat (whole and streamed),
responses, responses stream, messages (whole and streamed), jobs and WebSocket frames.
Query strings get one strict parser.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.adapters.conftest import postgres_url, storage_url  # noqa: F401  (fixtures)
from tests.server import conftest as server_conftest
from tests.server.conftest import Running, start_gateway

JSON_CT = {"content-type": "application/json"}
SCHEMA = '{"type":"object","properties":{"x":{"type":"number","minimum":0.5,"maximum":2.5}}}'


@attrs.frozen
class Route:
    """How to put a model name `M`, a user text `T` and extra fields `X` in one request."""

    name: str
    path: str  # "ws" for WebSocket frames
    template: str
    tools: str  # this surface's tools field holding SCHEMA (fractions inside)
    max_tokens: str  # this surface's output-token field
    endpoint: str

    def body(self, model: str = '"mock-fast"', text: str = '"hi"', extra: str = "") -> bytes:
        filled = self.template.replace("M", model, 1).replace("T", text, 1)
        return filled.replace("X", extra, 1).encode()

    def param(self, field: str) -> str:
        return f"request.{field}" if self.path == "/v1/jobs" else field


ROUTES = [
    Route(
        "chat", "/v1/chat/completions",
        '{"model":M,"messages":[{"role":"user","content":T}]X}',
        f',"tools":[{{"type":"function","function":{{"name":"f","parameters":{SCHEMA}}}}}]',
        "max_tokens", "chat.completions",
    ),
    Route(
        "chat-stream", "/v1/chat/completions",
        '{"model":M,"stream":true,"messages":[{"role":"user","content":T}]X}',
        f',"tools":[{{"type":"function","function":{{"name":"f","parameters":{SCHEMA}}}}}]',
        "max_tokens", "chat.completions",
    ),
    Route(
        "responses", "/v1/responses", '{"model":M,"input":TX}',
        f',"tools":[{{"type":"function","name":"f","parameters":{SCHEMA}}}]',
        "max_output_tokens", "responses",
    ),
    Route(
        "responses-stream", "/v1/responses/stream", '{"model":M,"input":TX}',
        f',"tools":[{{"type":"function","name":"f","parameters":{SCHEMA}}}]',
        "max_output_tokens", "responses",
    ),
    Route(
        "messages", "/v1/messages",
        '{"model":M,"max_tokens":32,"messages":[{"role":"user","content":T}]X}',
        f',"tools":[{{"name":"f","input_schema":{SCHEMA}}}]',
        "max_tokens", "messages",
    ),
    Route(
        "messages-stream", "/v1/messages",
        '{"model":M,"max_tokens":32,"stream":true,"messages":[{"role":"user","content":T}]X}',
        f',"tools":[{{"name":"f","input_schema":{SCHEMA}}}]',
        "max_tokens", "messages",
    ),
    Route(
        "jobs", "/v1/jobs", '{"request":{"model":M,"input":TX}}',
        f',"tools":[{{"type":"function","name":"f","parameters":{SCHEMA}}}]',
        "max_output_tokens", "jobs",
    ),
    Route(
        "ws", "ws", '{"type":"response.create","id":"c1","request":{"model":M,"input":TX}}',
        f',"tools":[{{"type":"function","name":"f","parameters":{SCHEMA}}}]',
        "max_output_tokens", "responses.ws",
    ),
]  # fmt: skip

ENDS = ("response.completed", "response.failed", "response.incomplete")
DEEP_LIST = "[" * 100_000 + "]" * 100_000
DEEP_OBJECTS = '{"a":' * 50_000 + "1" + "}" * 50_000


def hostile(route: Route) -> list[tuple[str, bytes, str, str | None]]:
    """(case, body, words the error message must hold, param it must name or None)."""
    big = "9" * 5000
    huge_field = f',"{route.max_tokens}":9223372036854775808'
    if route.name.startswith("messages"):  # its max_tokens is already in the template
        huge = route.body().replace(b'"max_tokens":32', b'"max_tokens":9223372036854775808')
    else:
        huge = route.body(extra=huge_field)
    # A WebSocket frame holds the request under "request", like a job.
    nested = "request.model" if route.path in ("/v1/jobs", "ws") else "model"
    return [
        ("surrogate-model", route.body(model='"mock-\\ud800"'), "surrogate", None),
        ("surrogate-text", route.body(text='"a \\udc00 b"'), "surrogate", None),
        ("nul-model", route.body(model='"mock\\u0000fast"'), "NUL", nested),
        ("nul-text", route.body(text='"a\\u0000b"'), "NUL", None),
        ("deep-lists", route.body(text=DEEP_LIST), "deeper", None),
        ("deep-objects", route.body(text=DEEP_OBJECTS), "deeper", None),
        ("long-integer", route.body(extra=f',"{route.max_tokens}":{big}'), "too large", None),
        ("huge-exponent", route.body(extra=',"temperature":1e400'), "too large", None),
        ("absurd-max-tokens", huge, route.max_tokens, route.param(route.max_tokens)),
    ]


@pytest.fixture
async def gateway(
    nursery: trio.Nursery,
    tmp_path: Path,
    storage_url: str,  # noqa: F811
) -> AsyncIterator[Running]:
    cfg = tmp_path / "umg.toml"
    cfg.write_text("[jobs]\nworkers = 1\npoll_seconds = 0.05\n")
    settings = server_conftest.test_settings(tmp_path, DATABASE_URL=storage_url, UMG_CONFIG=str(cfg))
    running = await start_gateway(nursery, settings)
    yield running
    running.stop.set()


async def ledger(gw: Running) -> list[tuple[str, str, str | None]]:
    """(endpoint, status, error_code) of every ledger row of the test tenant, oldest first."""
    now = gw.services.clock.wall()
    rows = await gw.services.storage.usage_rows("t1", now - timedelta(hours=1), now + timedelta(hours=1))
    return [(r.endpoint, r.status, r.error_code) for r in sorted(rows, key=lambda r: r.at)]


async def post(gw: Running, route: Route, body: bytes) -> tuple[int, dict[str, Any], str]:
    """Send one request on `route`; (status, error or completion object, raw text)."""
    if route.path == "ws":
        url = gw.url.replace("http://", "ws://", 1) + "/v1/responses/ws"
        headers = [(b"authorization", f"Bearer {gw.key}".encode())]
        async with open_websocket_url(url, extra_headers=headers) as ws:
            await ws.send_message(body.decode())
            frames: list[dict[str, Any]] = []
            with trio.fail_after(10):
                while not frames or frames[-1]["type"] not in ENDS:
                    frames.append(json.loads(await ws.get_message()))
                    if frames[0]["type"] == "error":
                        return 400, frames[0], json.dumps(frames)  # refused before it ran
        ok = frames[-1]["type"] == "response.completed"
        return 200 if ok else 500, frames[-1], json.dumps(frames)
    headers = {**JSON_CT, "prefer": "wait=10"} if route.path == "/v1/jobs" else JSON_CT
    async with gw.client() as client:
        r = await client.post(route.path, content=body, headers=headers)
    if r.headers["content-type"].startswith("application/json"):
        return r.status_code, r.json(), r.text
    return r.status_code, {}, r.text


def error_of(route: Route, answer: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(message, param, code) of an error answer in the route's shape."""
    if route.path == "ws":
        return answer["message"], answer.get("param"), answer["code"]
    if route.path == "/v1/messages":
        assert answer["type"] == "error", answer
        return answer["error"]["message"], None, None
    err = answer["error"]
    assert set(err) == {"message", "type", "param", "code", "request_id"}, err
    return err["message"], err["param"], err["code"]


@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
async def test_numbers_with_a_fraction_work(gateway: Running, route: Route) -> None:
    body = route.body(extra=',"temperature":0.7,"top_p":0.95' + route.tools)
    status, answer, text = await post(gateway, route, body)
    assert status == 200, text
    if route.path == "/v1/jobs":
        assert answer["status"] == "succeeded", answer
        assert answer["request"]["temperature"] == 0.7
    with trio.fail_after(10):
        while not (rows := await ledger(gateway)):
            await trio.sleep(0.05)
    assert rows == [(route.endpoint, "ok", None)]


@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
async def test_hostile_bodies_are_4xx_with_one_row(gateway: Running, route: Route) -> None:
    problems = []
    for case, body, words, param in hostile(route):
        before = await ledger(gateway)
        status, answer, text = await post(gateway, route, body)
        after = await ledger(gateway)
        if status != 400:
            problems.append(f"{case}: status {status}: {text[:300]}")
            continue
        message, got_param, code = error_of(route, answer)
        if words.lower() not in message.lower():
            problems.append(f"{case}: message does not say {words!r}: {message}")
        if param is not None and route.path != "/v1/messages" and got_param != param:
            problems.append(f"{case}: param {got_param!r}, wanted {param!r}")
        new = after[len(before) :]
        # A WebSocket frame that cannot be read is not a request (its error frame has no
        # id, and it is not recorded, like any frame that is not a request).
        rows = 0 if route.path == "ws" and code == "invalid_json" else 1
        if after[: len(before)] != before or len(new) != rows:
            problems.append(f"{case}: ledger rows added {new}")
        elif rows and (new[0][:2] != (route.endpoint, "error") or (code and new[0][2] != code)):
            problems.append(f"{case}: row {new[0]} for an answer with code {code}")
    assert not problems, "\n".join(problems)
    # and the gateway still serves this route
    status, _, text = await post(gateway, route, route.body())
    assert status == 200, text


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/v1/jobs?limit=%C2%B2", "limit"),  # "²": str.isdigit says yes, int says no
        ("/v1/jobs?limit=%D9%A3", "limit"),  # Arabic-Indic three
        ("/v1/jobs?limit=0", "limit"),
        ("/v1/jobs?limit=1e2", "limit"),
        ("/v1/jobs?limit=99999999999999999999999", "limit"),
        ("/v1/jobs?limit=5&limit=6", "limit"),
        ("/v1/jobs?status=queued%00", "status"),
        ("/v1/jobs?status=done", "status"),
        ("/v1/jobs?after=job_%00x", "after"),
        ("/v1/jobs?after=job_%0Ax", "after"),
        ("/v1/jobs?limt=5", "limt"),
        ("/v1/usage?from=%00", "from"),
        ("/v1/usage?group_by=model%00", "group_by"),
        ("/v1/usage?to=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z", "to"),
    ],
)
async def test_query_parameters_are_parsed_strictly(
    gateway: Running, path: str, param: str
) -> None:
    async with gateway.client() as client:
        r = await client.get(httpx.URL(path))
        ok = await client.get("/v1/jobs?limit=2&status=queued")
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    assert param in err["message"], err
    assert ok.status_code == 200, ok.text
