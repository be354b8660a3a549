"""`GET /v1/models` and `GET /v1/models/{id}`: the catalog in OpenAI's list shape.

Owns: how catalog entries are shown to callers. Each model carries the OpenAI fields
(`id`, `object`, `created`, `owned_by`) plus `gateway`: its deployments (provider,
upstream model, prices per 1M tokens as decimal strings, limits), fallbacks and aliases.
"""

from __future__ import annotations

from typing import Any

from quart import Response
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


def register(app: QuartTrio, services: Services) -> None:
    catalog = services.gateway.catalog

    @app.get("/v1/models")
    async def list_models() -> Response | dict[str, Any]:
        await require_key(services)
        return {
            "object": "list",
            "data": [model_object(m, catalog) for _, m in sorted(catalog.models.items())],
        }

    @app.get("/v1/models/<path:model_id>")
    async def get_model(model_id: str) -> dict[str, Any]:
        await require_key(services)
        return model_object(catalog.resolve(model_id), catalog)
