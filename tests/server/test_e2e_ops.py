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
