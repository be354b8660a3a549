"""Which adapter serves each provider label, built from settings.

Owns: turning `ProviderSettings` (config file + the ecosystem's environment variables,
see adapters/config.py) into provider adapters that share one pooled transport.

Rules:
- kind `openai` -> `OpenAIProvider` (Chat Completions), or `OpenAIResponsesProvider`
  when its `api` is "responses" (any other `api` is a configuration error);
  `anthropic` -> `AnthropicProvider`, `openai_compatible` -> `OpenAICompatibleProvider`;
  the label is the configured name, which is what catalog deployments name as their
  `provider`.
- `openai` and `anthropic` need a key; a compatible server may take none.
- An unknown kind or a duplicate name is a configuration error, raised at start, never
  at the first request.
- Every adapter gets the same transport, so connections are pooled per upstream host
  across providers, and closing it closes them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

from adapters.config import ConfigError, ProviderSettings
from adapters.providers.anthropic import AnthropicProvider
from adapters.providers.base import Provider
from adapters.providers.openai import OpenAIProvider
from adapters.providers.openai_compatible import OpenAICompatibleProvider
from adapters.providers.openai_responses import OpenAIResponsesProvider
from adapters.providers.transport import Transport

OPENAI_APIS = ("chat", "responses")


def _openai(p: ProviderSettings, transport: Transport) -> Provider:
    if p.api == "responses":
        return OpenAIResponsesProvider(
            name=p.name, base_url=p.base_url, api_key=_key(p), transport=transport
        )
    if p.api != "chat":
        raise ConfigError(
            f"provider '{p.name}' has unknown api '{p.api}' "
            f"(expected one of: {', '.join(OPENAI_APIS)})"
        )
    return OpenAIProvider(
        name=p.name, base_url=p.base_url, api_key=_key(p), transport=transport
    )


def _anthropic(p: ProviderSettings, transport: Transport) -> Provider:
    return AnthropicProvider(
        name=p.name, base_url=p.base_url, api_key=_key(p), transport=transport
    )


def _compatible(p: ProviderSettings, transport: Transport) -> Provider:
    return OpenAICompatibleProvider(
        name=p.name, base_url=p.base_url, api_key=p.api_key, transport=transport
    )


BUILDERS: Mapping[str, Callable[[ProviderSettings, Transport], Provider]] = MappingProxyType({
    "openai": _openai,
    "anthropic": _anthropic,
    "openai_compatible": _compatible,
})


def _key(p: ProviderSettings) -> str:
    if not p.api_key:
        raise ConfigError(f"provider '{p.name}' ({p.kind}) needs an API key")
    return p.api_key


def real_providers(
    configured: Iterable[ProviderSettings], transport: Transport
) -> dict[str, Provider]:
    """Provider label -> adapter for every configured provider."""
    providers: dict[str, Provider] = {}
    for p in configured:
        build = BUILDERS.get(p.kind)
        if build is None:
            raise ConfigError(
                f"provider '{p.name}' has unknown kind '{p.kind}' "
                f"(expected one of: {', '.join(sorted(BUILDERS))})"
            )
        if p.name in providers:
            raise ConfigError(f"provider '{p.name}' is configured twice")
        providers[p.name] = build(p, transport)
    return providers
