"""Which adapter serves each provider label, built from settings.

Owns: turning `ProviderSettings` (config file + the ecosystem's environment variables,
see adapters/config/providers.py) into provider adapters that share one pooled transport.

Rules:
- Every configured provider is an `HttpProvider` speaking the dialect of its kind
  (`DIALECTS`): kind `openai` -> `OPENAI_CHAT` (Chat Completions), or `OPENAI_RESPONSES`
  when its `api` is "responses" (any other `api` is a configuration error);
  `anthropic` -> `ANTHROPIC`, `openai_compatible` -> `OPENAI_COMPATIBLE`; the label is
  the configured name, which is what catalog deployments name as their `provider`.
- `openai` and `anthropic` need a key (`Dialect.key_required`); a compatible server
  may take none.
- An unknown kind or a duplicate name is a configuration error, raised at start, never
  at the first request.
- Every adapter gets the same transport, so connections are pooled per upstream host
  across providers, and closing it closes them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from adapters.config.providers import ProviderSettings
from adapters.config.values import ConfigError
from adapters.providers.base import Provider
from adapters.providers.http_provider import (
    ANTHROPIC,
    OPENAI_CHAT,
    OPENAI_COMPATIBLE,
    OPENAI_RESPONSES,
    Dialect,
    HttpProvider,
)
from adapters.providers.transport import Transport

# kind -> api -> dialect ("chat" is the only api of kinds other than openai)
DIALECTS: Mapping[str, Mapping[str, Dialect]] = MappingProxyType({
    "openai": MappingProxyType({"chat": OPENAI_CHAT, "responses": OPENAI_RESPONSES}),
    "anthropic": MappingProxyType({"chat": ANTHROPIC}),
    "openai_compatible": MappingProxyType({"chat": OPENAI_COMPATIBLE}),
})
OPENAI_APIS = tuple(DIALECTS["openai"])


def dialect_for(p: ProviderSettings) -> Dialect:
    """The dialect a configured provider speaks (ConfigError if there is none)."""
    apis = DIALECTS.get(p.kind)
    if apis is None:
        raise ConfigError(
            f"provider '{p.name}' has unknown kind '{p.kind}' "
            f"(expected one of: {', '.join(sorted(DIALECTS))})"
        )
    dialect = apis.get(p.api)
    if dialect is None:
        raise ConfigError(
            f"provider '{p.name}' has unknown api '{p.api}' "
            f"(expected one of: {', '.join(apis)})"
        )
    if dialect.key_required and not p.api_key:
        raise ConfigError(f"provider '{p.name}' ({p.kind}) needs an API key")
    return dialect


def real_providers(
    configured: Iterable[ProviderSettings], transport: Transport
) -> dict[str, Provider]:
    """Provider label -> adapter for every configured provider."""
    providers: dict[str, Provider] = {}
    for p in configured:
        dialect = dialect_for(p)
        if p.name in providers:
            raise ConfigError(f"provider '{p.name}' is configured twice")
        providers[p.name] = HttpProvider(
            name=p.name, dialect=dialect, base_url=p.base_url, api_key=p.api_key,
            transport=transport,
        )
    return providers
