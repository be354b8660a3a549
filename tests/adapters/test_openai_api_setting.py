"""`[providers.openai] api = "chat" | "responses"`: the setting and the adapter it picks."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.config.loader import load_settings
from adapters.config.providers import ProviderSettings
from adapters.config.values import ConfigError
from adapters.providers.http_provider import OPENAI_CHAT, OPENAI_RESPONSES, Dialect, HttpProvider
from adapters.providers.registry import real_providers
from adapters.providers.transport import H11Transport

ENV = {"OPENAI_API_KEY": "sk-openai-key-123456789", "ANTHROPIC_API_KEY": "sk-ant-key-987654321"}


def settings_with(tmp_path: Path, toml: str) -> dict[str, ProviderSettings]:
    path = tmp_path / "gw.toml"
    path.write_text(toml)
    settings = load_settings({**ENV, "UMG_CONFIG": str(path)})
    return {p.name: p for p in settings.providers}


@pytest.mark.parametrize(("toml", "api"), [
    ("", "chat"),
    ('[providers.openai]\napi = "chat"\n', "chat"),
    ('[providers.openai]\napi = "responses"\n', "responses"),
])
def test_openai_api_is_read_from_the_file(tmp_path: Path, toml: str, api: str) -> None:
    providers = settings_with(tmp_path, toml)
    assert providers["openai"].api == api
    assert providers["anthropic"].api == "chat"  # only OpenAI has a choice


def test_api_must_be_a_string(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="providers.openai.api"):
        settings_with(tmp_path, "[providers.openai]\napi = 2\n")


@pytest.mark.parametrize(("api", "dialect"), [
    ("chat", OPENAI_CHAT), ("responses", OPENAI_RESPONSES),
])
async def test_registry_picks_the_dialect_by_api(api: str, dialect: Dialect) -> None:
    transport = H11Transport()
    configured = (ProviderSettings(name="openai", kind="openai", base_url="http://o/v1",
                                   api_key="sk-secret-openai-key", api=api),)
    built = real_providers(configured, transport)
    provider = built["openai"]
    assert isinstance(provider, HttpProvider) and provider.dialect is dialect
    assert "sk-secret-openai-key" not in repr(built["openai"])
    await transport.aclose()


async def test_registry_rejects_an_unknown_api(tmp_path: Path) -> None:
    transport = H11Transport()
    providers = settings_with(tmp_path, '[providers.openai]\napi = "assistants"\n')
    with pytest.raises(ConfigError, match="unknown api 'assistants'.*chat, responses"):
        real_providers(providers.values(), transport)
    await transport.aclose()
