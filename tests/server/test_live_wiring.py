"""Live mode wiring: settings -> registry -> adapters -> the fake provider, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from adapters.config.loader import load_settings
from adapters.config.providers import ProviderSettings
from adapters.config.values import ConfigError
from adapters.providers.http_provider import (
    ANTHROPIC,
    OPENAI_CHAT,
    OPENAI_COMPATIBLE,
    Dialect,
    HttpProvider,
)
from adapters.providers.registry import real_providers
from adapters.providers.transport import H11Transport
from server.services import serving_catalog
from tests.fakes import running_fake_provider
from tests.server.live import PROVIDER_KEYS, live_gateway


async def test_registry_builds_one_adapter_per_configured_provider() -> None:
    transport = H11Transport()
    configured = (
        ProviderSettings(name="openai", kind="openai", base_url="http://o/v1", api_key="sk-o"),
        ProviderSettings(name="anthropic", kind="anthropic", base_url="http://a", api_key="sk-a"),
        ProviderSettings(name="groq", kind="openai_compatible", base_url="http://g/v1"),
    )
    built = real_providers(configured, transport)
    expected: dict[str, Dialect] = {
        "openai": OPENAI_CHAT, "anthropic": ANTHROPIC, "groq": OPENAI_COMPATIBLE}
    for name, dialect in expected.items():
        provider = built[name]
        assert isinstance(provider, HttpProvider) and provider.dialect is dialect
    assert "sk-o" not in repr(built) and "sk-a" not in repr(built)
    await transport.aclose()


@pytest.mark.parametrize(
    ("configured", "message"),
    [
        ((ProviderSettings(name="x", kind="grpc", base_url="http://x"),), "unknown kind 'grpc'"),
        ((ProviderSettings(name="openai", kind="openai", base_url="http://o"),), "needs an API key"),
        (
            (
                ProviderSettings(name="g", kind="openai_compatible", base_url="http://1"),
                ProviderSettings(name="g", kind="openai_compatible", base_url="http://2"),
            ),
            "configured twice",
        ),
    ],
)
async def test_registry_rejects_bad_configuration(
    configured: tuple[ProviderSettings, ...], message: str
) -> None:
    transport = H11Transport()
    with pytest.raises(ConfigError, match=message):
        real_providers(configured, transport)
    await transport.aclose()


def test_live_catalog_serves_only_configured_providers(tmp_path: Path) -> None:
    only_openai = load_settings({"OPENAI_API_KEY": "sk-x"})
    catalog = serving_catalog(only_openai)
    assert {d.provider for m in catalog.models.values() for d in m.deployments} <= {"openai", "mock"}
    assert "claude-sonnet-4" not in catalog.models
    assert all(f in catalog.models for m in catalog.models.values() for f in m.fallbacks)


def test_compatible_models_join_the_catalog_with_overridable_prices(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[providers.compatible]]\nname = "groq"\nbase_url = "http://g/v1"\n'
        'models = ["llama-3.1-8b-instant"]\n'
        '[[catalog.models."groq/llama-3.1-8b-instant".deployments]]\n'
        'provider = "groq"\nupstream_model = "llama-3.1-8b-instant"\n'
        'price = { input = "0.05", output = "0.08", version = "groq-2026" }\n'
    )
    catalog = serving_catalog(load_settings({"UMG_CONFIG": str(path)}))
    (d,) = catalog.resolve("groq/llama-3.1-8b-instant").deployments
    assert (d.provider, d.upstream_model, str(d.price.input), d.price.version) == (
        "groq", "llama-3.1-8b-instant", "0.05", "groq-2026"
    )


def test_tuning_tables_reject_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("[attempts]\nmax_atempts = 3\n")
    with pytest.raises(ConfigError, match="max_atempts"):
        load_settings({"UMG_CONFIG": str(path)})


async def test_each_provider_kind_answers_through_the_gateway(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with running_fake_provider() as fake:
        gw = await live_gateway(nursery, tmp_path, fake)
        async with gw.client() as client:
            for model, path in [
                ("gpt-4o-mini", "/v1/chat/completions"),
                ("claude-3.5-haiku", "/v1/messages"),
                ("local/llama-3-8b", "/v1/chat/completions"),
            ]:
                before = len(fake.requests)
                r = await client.post(
                    "/v1/chat/completions",
                    json={"model": model, "messages": [{"role": "user", "content": "hi there"}]},
                )
                assert r.status_code == 200, r.text
                assert r.json()["choices"][0]["message"]["content"] == "Echo: hi there"
                sent = fake.requests[before:]
                assert [q.path for q in sent] == [path]
                upstream = serving_catalog(gw.services.settings).resolve(model).deployments[0]
                assert sent[0].json()["model"] == upstream.upstream_model
                auth = sent[0].headers.get("authorization", "") + sent[0].headers.get("x-api-key", "")
                if model.startswith("local/"):
                    assert auth == ""
                else:
                    assert auth.endswith(PROVIDER_KEYS["OPENAI_API_KEY" if path.endswith("completions") else "ANTHROPIC_API_KEY"])
        gw.stop.set()


async def test_a_claude_model_without_anthropic_says_what_is_configured_and_how_to_add_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    from tests.server.conftest import start_gateway

    settings = load_settings({
        "DATABASE_URL": f"sqlite:///{tmp_path}/only-openai.db", "OPENAI_API_KEY": "sk-only-openai-123"
    })
    assert not settings.mock_mode
    gw = await start_gateway(nursery, settings)
    async with gw.client() as client:
        chat = await client.post("/v1/chat/completions", json={
            "model": "claude-sonnet-4", "messages": [{"role": "user", "content": "hi"}]})
        one = await client.get("/v1/models/claude-3.5-haiku")
        unknown = await client.get("/v1/models/no-such-model")
    assert chat.status_code == 404, chat.text
    error = chat.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    message = error["message"]
    assert "'claude-sonnet-4' is served by anthropic" in message
    assert "configured providers: openai" in message
    assert "set ANTHROPIC_API_KEY" in message and "docs/providers.md" in message
    assert "sk-only-openai-123" not in message
    assert one.status_code == 404 and "ANTHROPIC_API_KEY" in one.json()["error"]["message"]
    assert unknown.json()["error"]["message"] == "The model 'no-such-model' does not exist"
    gw.stop.set()


async def test_upstream_connections_bound_the_pool_per_provider_origin(tmp_path: Path) -> None:
    from server.services import build_services

    assert load_settings({}).limits.upstream_connections == 1024
    cfg = tmp_path / "umg.toml"
    cfg.write_text("[limits]\nupstream_connections = 3\n")
    settings = load_settings({
        "UMG_CONFIG": str(cfg), "OPENAI_API_KEY": "sk-x",
        "DATABASE_URL": f"sqlite:///{tmp_path}/pool.db",
    })
    assert settings.limits.upstream_connections == 3
    services = await build_services(settings)
    try:
        assert isinstance(services.transport, H11Transport)
        assert services.transport.limits.max_connections == 3
    finally:
        await services.close()
    for bad in ("0", "2.5", "true"):
        cfg.write_text(f"[limits]\nupstream_connections = {bad}\n")
        with pytest.raises(ConfigError, match="upstream_connections"):
            load_settings({"UMG_CONFIG": str(cfg)})
