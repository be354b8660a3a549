"""`GET /v1/models` and `GET /v1/models/{id}`: the catalog in OpenAI's list shape.

Owns: how catalog entries are shown to callers. Each model carries the OpenAI fields
(`id`, `object`, `created`, `owned_by`) plus `gateway`: its deployments (provider,
upstream model, prices per 1M tokens as decimal strings, limits), fallbacks and aliases.
A request with an `anthropic-version` header (the Anthropic SDKs send it) gets Anthropic's
shape instead: `{type: "model", id, display_name, created_at}` (RFC 3339), and the list as
`{data, first_id, last_id, has_more: false}` (the whole catalog is one page).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from core.billing import format_usd
from core.catalog import Catalog, ModelEntry
from server.auth import require_key
from server.services import Services


def model_object(entry: ModelEntry, catalog: Catalog) -> dict[str, Any]:
    aliases = sorted(a for a, target in catalog.aliases.items() if target == entry.id)
    return {
        "id": entry.id,
        "object": "model",
        "created": entry.created,
        "owned_by": entry.owned_by,
        "gateway": {
            "aliases": aliases,
            "fallbacks": list(entry.fallbacks),
            "providers": sorted({d.provider for d in entry.deployments}),
            "deployments": [
                {
                    "id": d.id,
                    "provider": d.provider,
                    "upstream_model": d.upstream_model,
                    "context_window": d.context_window,
                    "max_output_tokens": d.max_output_tokens,
                    "capabilities": sorted(d.capabilities),
                    "pricing": {
                        "unit": "USD per 1M tokens",
                        "input": format_usd(d.price.input),
                        "output": format_usd(d.price.output),
                        "cached_input": None
                        if d.price.cached_input is None
                        else format_usd(d.price.cached_input),
                        "cache_write": None
                        if d.price.cache_write is None
                        else format_usd(d.price.cache_write),
                        "version": d.price.version,
                    },
                }
                for d in entry.deployments
            ],
        },
    }


def anthropic_model_object(entry: ModelEntry) -> dict[str, Any]:
    created = datetime.fromtimestamp(entry.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "model", "id": entry.id, "display_name": entry.id, "created_at": created}


def anthropic_list(entries: list[ModelEntry]) -> dict[str, Any]:
    data = [anthropic_model_object(e) for e in entries]
    return {
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": False,
    }


def _anthropic() -> bool:
    return "anthropic-version" in request.headers


def register(app: QuartTrio, services: Services) -> None:
    catalog = services.gateway.catalog

    @app.get("/v1/models")
    async def list_models() -> Response | dict[str, Any]:
        await require_key(services)
        entries = [m for _, m in sorted(catalog.models.items())]
        if _anthropic():
            return anthropic_list(entries)
        return {"object": "list", "data": [model_object(m, catalog) for m in entries]}

    @app.get("/v1/models/<path:model_id>")
    async def get_model(model_id: str) -> dict[str, Any]:
        await require_key(services)
        entry = catalog.resolve(model_id)
        return anthropic_model_object(entry) if _anthropic() else model_object(entry, catalog)
