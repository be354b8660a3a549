"""`[webhooks]` settings: the config file table and the environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.config.loader import load_settings
from adapters.config.values import ConfigError
from adapters.config.webhooks import WebhookSettings


def settings_with(tmp_path: Path, table: str, **env: str) -> WebhookSettings:
    config = tmp_path / "umg.toml"
    config.write_text(table)
    return load_settings({"UMG_CONFIG": str(config), **env}).webhooks


def test_defaults_refuse_http_and_allow_no_host(tmp_path: Path) -> None:
    assert settings_with(tmp_path, "") == WebhookSettings(allow_hosts=(), allow_http=False)


def test_the_file_table_and_the_environment(tmp_path: Path) -> None:
    table = '[webhooks]\nallow_hosts = ["hooks.internal", "10.1.2.3"]\nallow_http = true\n'
    assert settings_with(tmp_path, table) == WebhookSettings(("hooks.internal", "10.1.2.3"), True)
    from_env = settings_with(
        tmp_path, table, UMG_WEBHOOK_ALLOW_HOSTS=" a.example, ,127.0.0.1 ", UMG_WEBHOOK_ALLOW_HTTP="off"
    )
    assert from_env == WebhookSettings(("a.example", "127.0.0.1"), False)


@pytest.mark.parametrize(
    ("table", "env", "message"),
    [
        ("[webhooks]\nallow_host = []\n", {}, "unknown keys ['allow_host']"),
        ('[webhooks]\nallow_hosts = "a.example"\n', {}, "allow_hosts must be a list"),
        ('[webhooks]\nallow_http = "yes"\n', {}, "allow_http must be true or false"),
        ("", {"UMG_WEBHOOK_ALLOW_HTTP": "maybe"}, "UMG_WEBHOOK_ALLOW_HTTP must be true or false"),
    ],
)
def test_bad_values_are_errors(tmp_path: Path, table: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        settings_with(tmp_path, table, **env)
