"""A gateway in live mode whose providers are the fake provider server (real sockets).

`live_gateway(nursery, tmp_path, fake, config=...)` starts the gateway with OpenAI,
Anthropic and one OpenAI-compatible provider ("local", models "llama-3-8b" and
"qwen-2") all pointing at `fake`, and quick resilience settings so retries and breaker
cooldowns take milliseconds. `config` is extra TOML appended to the file. Its read
timeouts (`first_byte`, `idle`) are long: no test through it is about them, and with 2 s
a stall of the test process on a loaded machine could cut a stream mid-answer; the tests
of those timeouts set their own (tests/server/test_e2e_failures.py `start_live`).
"""

from __future__ import annotations

from pathlib import Path

import trio

from adapters.config.loader import load_settings
from tests.fakes import FakeProvider
from tests.server.conftest import Running, start_gateway

PROVIDER_KEYS = {"OPENAI_API_KEY": "sk-fake-openai-1234567890", "ANTHROPIC_API_KEY": "sk-ant-fake-0987654321"}

BASE_CONFIG = """
[attempts]
base_backoff = 0.01
max_backoff = 0.05
max_retry_after = 2.0
attempt_timeout = 10.0
total_timeout = 20.0

[timeouts]
connect = 2.0
first_byte = 30.0
idle = 30.0
total = 20.0

[health]
cooldown = 0.3

[[providers.compatible]]
name = "local"
base_url = "{openai_url}"
models = ["llama-3-8b", "qwen-2"]
"""


async def live_gateway(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider, config: str = ""
) -> Running:
    path = tmp_path / "live.toml"
    path.write_text(BASE_CONFIG.format(openai_url=fake.openai_base_url) + config)
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/live.db",
        "UMG_CONFIG": str(path),
        "OPENAI_BASE_URL": fake.openai_base_url,
        "ANTHROPIC_BASE_URL": fake.base_url,
        **PROVIDER_KEYS,
    }
    settings = load_settings(env)
    assert not settings.mock_mode
    return await start_gateway(nursery, settings)
