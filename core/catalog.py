"""The model catalog: model names and aliases -> deployments with prices and limits.

Owns: what models exist, who serves each (provider + upstream model name), what a token
costs there (USD per 1M tokens, Decimal), context window and output limits, capabilities,
routing weight, and which other models a request may fall back to.

Rules:
- The catalog is data, not code: `catalog_from_data` parses a TOML-shaped mapping
  (the default lives in `core/default_catalog.toml`; operators override it from config).
- A name resolves through `aliases` first, then `models`; an unknown name is
  `UnknownModel` with param "model".
- `candidates(name)` is the model's own deployments, then those of each fallback model
  in order, without duplicates.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from attrs import field, frozen

from core.errors import UnknownModel


@frozen
class Price:
    """USD per 1M tokens. `version` names the price list, recorded on every ledger row."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    version: str = "default"


@frozen
class Deployment:
    id: str  # "<provider>/<upstream_model>" unless configured otherwise
    model: str  # the catalog model this deployment serves
    provider: str  # provider label: "openai", "anthropic", "mock", or a configured name
    upstream_model: str
    price: Price
    context_window: int
    max_output_tokens: int
    capabilities: frozenset[str] = frozenset()
    weight: int = 1


@frozen
class ModelEntry:
    id: str
    owned_by: str
    created: int
    deployments: tuple[Deployment, ...]
    fallbacks: tuple[str, ...] = ()


@frozen
class Catalog:
    models: Mapping[str, ModelEntry] = field(factory=dict)
    aliases: Mapping[str, str] = field(factory=dict)

    def resolve(self, name: str) -> ModelEntry:
        entry = self.models.get(self.aliases.get(name, name))
        if entry is None:
            raise UnknownModel(f"The model '{name}' does not exist", param="model")
        return entry

    def candidates(self, name: str) -> tuple[Deployment, ...]:
        entry = self.resolve(name)
        seen: dict[str, Deployment] = {d.id: d for d in entry.deployments}
        for fallback in entry.fallbacks:
            for d in self.resolve(fallback).deployments:
                seen.setdefault(d.id, d)
        return tuple(seen.values())
