"""Operations surface end to end: health, the OpenAPI document and docs page, and SSE
keep-alives on idle streams."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import trio
from attrs import evolve

from server.app import create_app
from tests.server.conftest import Running, start_gateway
from tests.server.conftest import test_settings as make_settings

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def _openapi_path(rule: str) -> str:
    """`/v1/jobs/<job_id>` -> `/v1/jobs/{}` (parameter names may differ)."""
    return re.sub(r"<(?:[a-z]+:)?[a-z_]+>", "{}", rule)


async def test_healthz_needs_no_key_and_readyz_checks_storage(gateway: Running) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
        health = await anonymous.get("/healthz")
        ready = await anonymous.get("/readyz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["checks"]["storage"] is True
    await gateway.services.storage.close()  # storage gone: not ready any more
    async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
        gone = await anonymous.get("/readyz")
    assert gone.status_code == 503
    assert gone.json()["status"] == "not_ready"


async def test_openapi_describes_every_route_and_its_schemas(gateway: Running) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
        doc = (await anonymous.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    app = create_app(gateway.services)
    routes = {
        (_openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in (rule.methods or set()) & METHODS
    }
    described = {
        (re.sub(r"\{[a-z_]+\}", "{}", path), method)
        for path, ops in doc["paths"].items()
        for method in ops
    }
    assert routes - described == set()
    schemas = doc["components"]["schemas"]
    refs: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                refs.add(ref.rsplit("/", 1)[-1])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(doc["paths"])
    assert {"UnifiedRequest", "ChatCompletionRequest", "MessagesRequest", "Job"} <= refs
    assert refs <= set(schemas), f"dangling $ref: {sorted(refs - set(schemas))}"


async def test_docs_page_renders_the_document(gateway: Running) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
        page = await anonymous.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for path in ("/v1/responses", "/v1/chat/completions", "/v1/jobs", "/v1/usage"):
        assert path in page.text
    text = page.text
    # a reference, not a list: request fields with their constraints, examples, statuses
    assert "<h4>Request body: <a href='#schema-MessagesRequest'>" in text
    assert "<code>max_tokens</code> <span class='req'>required</span>" in text
    assert "<code>stop_sequences</code>" in text and "minimum: <code>1</code>" in text
    assert "&quot;max_tokens&quot;: 256" in text  # the example body
    assert "curl -X POST http://localhost:3000/v1/messages" in text
    assert "<a href='#schema-AnthropicError'>" in text and ">409<" in text
    assert "id='schema-ResponsesStreamEvent'" in text and "response.output_text.delta" in text
    assert "gpt-4.1" in text  # model examples come from the catalog
    # self-contained: no scripts and nothing loaded from elsewhere
    assert "<script" not in text and "src=" not in text and "href='http" not in text


async def test_openapi_request_schemas_are_the_parsers_field_tables(gateway: Running) -> None:
    from server.wire import anthropic_messages, openai_chat, responses

    async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
        doc = (await anonymous.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    for name, table in (("UnifiedRequest", responses), ("ChatCompletionRequest", openai_chat),
                        ("MessagesRequest", anthropic_messages)):
        schema = schemas[name]
        assert set(schema["properties"]) == set(table.SUPPORTED) | set(table.IGNORED), name
        assert schema["additionalProperties"] is False
        assert set(schema["properties"]["model"]["examples"]) == set(gateway.services.gateway.catalog.models)
    assert schemas["MessagesRequest"]["required"] == ["model", "max_tokens", "messages"]
    paths = doc["paths"]
    messages = paths["/v1/messages"]["post"]["responses"]
    assert messages["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/AnthropicError")
    assert set(messages["200"]["content"]) == {"application/json", "text/event-stream"}
    assert set(paths["/v1/responses/stream"]["post"]["responses"]["200"]["content"]) == {"text/event-stream"}
    assert {"404", "409"} <= set(paths["/v1/jobs/{id}/cancel"]["post"]["responses"])
    assert "404" in paths["/v1/jobs/{id}"]["get"]["responses"]


async def test_405_names_the_allowed_methods_and_a_plain_get_on_the_websocket_route_is_426(
    gateway: Running,
) -> None:
    async with gateway.client() as client:
        wrong = await client.request("TRACE", "/v1/models")
        plain = await client.get("/v1/responses/ws")
    async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
        no_key = await anonymous.get("/v1/responses/ws")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, HEAD, OPTIONS"
    assert plain.status_code == 426 and plain.headers["upgrade"] == "websocket"
    assert plain.json()["error"]["code"] == "upgrade_required"
    assert no_key.status_code == 401


async def test_idle_streams_get_keepalive_comments(nursery: trio.Nursery, tmp_path: Path) -> None:
    base = make_settings(tmp_path)
    settings = evolve(base, limits=evolve(base.limits, keepalive_seconds=0.1))
    gw = await start_gateway(nursery, settings)
    slow = {"mock_scenario": "latency_ms=700"}
    cases = [
        ("/v1/responses/stream", {"model": "gpt-4.1", "input": "wait", "metadata": slow}),
        ("/v1/chat/completions", {"model": "gpt-4.1", "stream": True, "metadata": slow,
                                  "messages": [{"role": "user", "content": "wait"}]}),
    ]
    async with gw.client() as client:
        for path, body in cases:
            lines: list[str] = []
            async with client.stream("POST", path, json=body) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    lines.append(line)
            comments = [i for i, line in enumerate(lines) if line.startswith(":")]
            first_text = next(i for i, line in enumerate(lines) if "Mock" in line)
            # the upstream is silent for 0.7 s: several keep-alives precede the first text
            assert len([i for i in comments if i < first_text]) >= 3, (path, lines[:12])
    gw.stop.set()
