"""`[providers]` and the provider variables: which upstreams this gateway serves.

Owns: `ProviderSettings` (its `api_key` excluded from `repr`, so a credential is never
printed), the built-in providers and the variables that turn them on, the
OpenAI-compatible servers and the catalog entries their models get, and the sentence
that tells an operator how to add a provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from attrs import field, frozen

from adapters.config.values import ConfigError


@frozen
class ProviderSettings:
    name: str  # label used by catalog deployments ("openai", "anthropic", "groq", ...)
    kind: str  # openai | anthropic | openai_compatible | mock
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    models: tuple[str, ...] = ()  # openai_compatible: upstream models it serves
    api: str = "chat"  # openai: "chat" (Chat Completions) or "responses" (Responses API)


# What a compatible server's model gets when the operator says nothing more about it: the
# limits of a typical modern open model, and price 0 (right for a local server; for a
# paid one, set the price in `[catalog.models."<name>/<model>"]`).
def compatible_defaults() -> dict[str, Any]:
    return {
        "context_window": 131072,
        "max_output_tokens": 8192,
        "capabilities": ["tools", "json"],
        "price": {"input": "0", "output": "0", "version": "unpriced"},
    }


def compatible_catalog_data(providers: tuple[ProviderSettings, ...]) -> dict[str, Any]:
    """Catalog entries `<provider name>/<upstream model>` for each OpenAI-compatible
    provider's listed models (merged under the operator's own catalog overrides)."""
    models: dict[str, Any] = {}
    for p in providers:
        if p.kind != "openai_compatible":
            continue
        for upstream in p.models:
            models[f"{p.name}/{upstream}"] = {
                "owned_by": p.name,
                "created": 0,
                "deployments": [
                    {"provider": p.name, "upstream_model": upstream, **compatible_defaults()}
                ],
            }
    return {"models": models}


# label -> (API key variable, base URL variable, default base URL)
BUILTIN_PROVIDERS: Mapping[str, tuple[str, str, str]] = MappingProxyType({
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL", "https://api.openai.com/v1"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
})
_TITLES: Mapping[str, str] = MappingProxyType({"openai": "OpenAI", "anthropic": "Anthropic"})


def how_to_add_providers() -> dict[str, str]:
    """Provider label -> one sentence on how to configure it (for "model not served" errors)."""
    return {
        name: f"To add {_TITLES[name]}, set {key_var} in the gateway's environment (or "
        f"[providers.{name}] api_key_env in its config file; see docs/providers.md) and "
        "restart it."
        for name, (key_var, _, _) in BUILTIN_PROVIDERS.items()
    }


def read_providers(file_cfg: Mapping[str, Any], env: Mapping[str, str]) -> tuple[ProviderSettings, ...]:
    section = file_cfg.get("providers", {})
    found: list[ProviderSettings] = []
    for name, (key_var, url_var, default_url) in BUILTIN_PROVIDERS.items():
        cfg = section.get(name, {})
        key = env.get(cfg.get("api_key_env", key_var)) or cfg.get("api_key")
        url = env.get(url_var) or cfg.get("base_url") or default_url
        if key:
            api = cfg.get("api", "chat") if name == "openai" else "chat"
            if not isinstance(api, str):
                raise ConfigError(f"providers.{name}.api must be a string, not {api!r}")
            found.append(ProviderSettings(name=name, kind=name, base_url=url, api_key=key, api=api))
    for item in section.get("compatible", []):
        try:
            name, url = item["name"], item["base_url"]
        except KeyError as missing:
            raise ConfigError(f"providers.compatible entries need {missing}") from None
        key_env = item.get("api_key_env")
        found.append(
            ProviderSettings(
                name=name,
                kind="openai_compatible",
                base_url=url,
                api_key=env.get(key_env) if key_env else item.get("api_key"),
                models=tuple(item.get("models", ())),
            )
        )
    return tuple(found)
