"""End to end: `[limits] default_rpm` / `default_tpm`, and refused requests costing nothing.

- A key without an rpm / tpm of its own gets the configured defaults (the TOML config
  file, through `build_services` and the Gateway into `Limits`); a key with its own limit
  keeps it, and without defaults such a key stays unlimited.
- A request refused by one rate bucket does not consume from the other: when the tokens
  bucket refuses (or the request can never fit it), the requests bucket is left as it was.

Real server on port 0, SQLite, Mock providers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from adapters.config.loader import load_settings
from adapters.config.values import ConfigError
from tests.server.conftest import Running, start_gateway
from tests.server.conftest import test_settings as settings_for


def ask(max_output_tokens: int = 5, output_tokens: int | None = None) -> dict[str, Any]:
    """A small request whose answer has `output_tokens` words (default: the cap)."""
    words = output_tokens if output_tokens is not None else max_output_tokens
    return {
        "model": "mock-fast",
        "input": "hi",
        "max_output_tokens": max_output_tokens,
        "metadata": {"mock_scenario": f"output_tokens={words}"},
    }


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "umg.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
async def defaults_gateway(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    """A gateway whose config file sets default_rpm = 3 and default_tpm = 1000."""
    cfg = config(tmp_path, "[limits]\ndefault_rpm = 3\ndefault_tpm = 1000\n")
    running = await start_gateway(nursery, settings_for(tmp_path, UMG_CONFIG=cfg))
    yield running
    running.stop.set()


async def statuses(client: httpx.AsyncClient, n: int, body: dict[str, Any]) -> list[httpx.Response]:
    return [await client.post("/v1/responses", json=body) for _ in range(n)]


async def test_default_rpm_applies_to_keys_without_their_own(defaults_gateway: Running) -> None:
    assert defaults_gateway.services.settings.limits.default_rpm == 3
    key = await defaults_gateway.new_key()  # no rpm, no tpm
    async with defaults_gateway.client(key=key) as client:
        answers = await statuses(client, 4, ask())
    assert [r.status_code for r in answers] == [200, 200, 200, 429], [r.text for r in answers]
    for r, left in zip(answers[:3], ("2", "1", "0"), strict=True):
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        assert r.headers["x-ratelimit-remaining-requests"] == left
        assert r.headers["x-ratelimit-limit-tokens"] == "1000"  # the default tpm too
    refused = answers[3]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "requests per minute (3)" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 20  # 3/min: one every 20 s


async def test_own_limits_beat_the_defaults(defaults_gateway: Running) -> None:
    key = await defaults_gateway.new_key(rpm=5, tpm=50_000)
    async with defaults_gateway.client(key=key) as client:
        answers = await statuses(client, 4, ask())
    assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
    assert answers[-1].headers["x-ratelimit-limit-requests"] == "5"
    assert answers[-1].headers["x-ratelimit-remaining-requests"] == "1"
    assert answers[-1].headers["x-ratelimit-limit-tokens"] == "50000"


async def test_default_tpm_refuses_and_is_adjusted_to_real_usage(defaults_gateway: Running) -> None:
    key = await defaults_gateway.new_key(rpm=100)  # own rpm; tpm from the default (1000)
    async with defaults_gateway.client(key=key) as client:
        # asks for up to 900 output tokens but the answer has 10: the estimate is refunded
        first = await client.post("/v1/responses", json=ask(900, output_tokens=10))
        assert first.status_code == 200, first.text
        assert first.headers["x-ratelimit-limit-tokens"] == "1000"
        assert int(first.headers["x-ratelimit-remaining-tokens"]) < 100  # charged up front
        second = await client.post("/v1/responses", json=ask(900, output_tokens=10))
        assert second.status_code == 200, second.text  # fits only because of the refund
        big = await client.post("/v1/responses", json=ask(1001))
    assert big.status_code == 429
    assert "tokens per minute" in big.json()["error"]["message"]
    assert "too large" in big.json()["error"]["message"]


async def test_without_defaults_keys_stay_unlimited(gateway: Running) -> None:
    assert gateway.services.settings.limits.default_rpm is None
    key = await gateway.new_key()
    async with gateway.client(key=key) as client:
        answers = await statuses(client, 5, ask())
    assert [r.status_code for r in answers] == [200] * 5
    assert not any(h.startswith("x-ratelimit-") for h in answers[-1].headers)


@pytest.mark.parametrize("value", ["0", "-5", '"600"', "1.5", "true"])
def test_bad_default_limits_are_config_errors(tmp_path: Path, value: str) -> None:
    for name in ("default_rpm", "default_tpm"):
        cfg = config(tmp_path, f"[limits]\n{name} = {value}\n")
        with pytest.raises(ConfigError, match=f"limits.{name} must be a whole number >= 1"):
            load_settings({"UMG_CONFIG": cfg})


def test_budget_slices_are_on_by_default_and_the_environment_wins(tmp_path: Path) -> None:
    assert load_settings({}).limits.budget_slices is True
    cfg = config(tmp_path, "[limits]\nbudget_slices = false\n")
    assert load_settings({"UMG_CONFIG": cfg}).limits.budget_slices is False
    assert load_settings({"UMG_CONFIG": cfg, "UMG_BUDGET_SLICES": "true"}).limits.budget_slices is True
    with pytest.raises(ConfigError, match="budget_slices must be true or false"):
        load_settings({"UMG_CONFIG": config(tmp_path, '[limits]\nbudget_slices = "no"\n')})


# -- a refused request costs nothing in the other bucket -------------------------------------


async def test_request_refused_by_tokens_bucket_keeps_its_request_quota(gateway: Running) -> None:
    key = await gateway.new_key(rpm=2, tpm=100)
    async with gateway.client(key=key) as client:
        first = await client.post("/v1/responses", json=ask(60))
        assert first.status_code == 200, first.text
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        refused = await client.post("/v1/responses", json=ask(60))
        assert refused.status_code == 429, refused.text
        assert "tokens per minute" in refused.json()["error"]["message"]
        # the request taken before the tokens bucket refused was given back
        assert refused.headers["x-ratelimit-remaining-requests"] == "1"
        assert refused.headers["x-ratelimit-limit-requests"] == "2"
        # so a small request still fits: the second of this key's 2 per minute
        small = await client.post("/v1/responses", json=ask(3))
        assert small.status_code == 200, small.text
        assert small.headers["x-ratelimit-remaining-requests"] == "0"
        third = await client.post("/v1/responses", json=ask(1))
    assert third.status_code == 429
    assert "requests per minute" in third.json()["error"]["message"]


async def test_request_too_large_for_tpm_touches_no_bucket(gateway: Running) -> None:
    key = await gateway.new_key(rpm=1, tpm=50)
    async with gateway.client(key=key) as client:
        huge = await client.post("/v1/responses", json=ask(100))
        assert huge.status_code == 429, huge.text
        assert "too large" in huge.json()["error"]["message"]
        ok = await client.post("/v1/responses", json=ask(3))  # the one request per minute
        assert ok.status_code == 200, ok.text
        assert ok.headers["x-ratelimit-remaining-requests"] == "0"


async def test_token_refusal_refund_holds_under_concurrency(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Many requests too big for what is left of the tokens bucket, racing: none of them
    may eat into the request quota, which stays exactly as the successes left it."""
    running = await start_gateway(nursery, settings_for(tmp_path))
    try:
        key = await running.new_key(rpm=20, tpm=200)
        codes: list[int] = []
        async with running.client(key=key) as client:
            first = await client.post("/v1/responses", json=ask(150))
            assert first.status_code == 200, first.text

            async def one() -> None:
                codes.append((await client.post("/v1/responses", json=ask(150))).status_code)

            async with trio.open_nursery() as race:
                for _ in range(8):
                    race.start_soon(one)
            after = await client.post("/v1/responses", json=ask(1))
        assert codes == [429] * 8
        assert after.status_code == 200, after.text
        # 20 per minute: the first request and this one only (a second or so of refill
        # may add at most one back)
        assert int(after.headers["x-ratelimit-remaining-requests"]) in (18, 19)
    finally:
        running.stop.set()
