"""Observability settings: `[metrics]`, `[server] request_log` and the log levels, from the
config file, the environment and `umg serve`'s flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.config.loader import load_settings
from adapters.config.metrics import MetricsSettings
from adapters.config.settings import Settings
from adapters.config.values import ConfigError
from server.cli import _parser, _with_limit_flags


def settings_with(tmp_path: Path, table: str, **env: str) -> Settings:
    config = tmp_path / "umg.toml"
    config.write_text(table)
    return load_settings({"UMG_CONFIG": str(config), **env})


def test_defaults_count_and_log_with_the_metrics_behind_an_admin_key(tmp_path: Path) -> None:
    s = settings_with(tmp_path, "")
    assert (s.metrics, s.request_log) == (MetricsSettings(enabled=True, public=False), True)
    assert (s.log_level, s.third_party_log_level) == ("info", "warning")


def test_the_file_then_the_environment(tmp_path: Path) -> None:
    table = (
        '[server]\nlog_level = "WARNING"\nthird_party_log_level = "info"\nrequest_log = false\n'
        "[metrics]\npublic = true\n"
    )
    s = settings_with(tmp_path, table)
    assert (s.log_level, s.third_party_log_level, s.request_log) == ("warning", "info", False)
    assert s.metrics == MetricsSettings(enabled=True, public=True)
    s = settings_with(
        tmp_path, table, LOG_LEVEL="debug", UMG_THIRD_PARTY_LOG_LEVEL="error", UMG_REQUEST_LOG="on",
        UMG_METRICS="false", UMG_METRICS_PUBLIC="no",
    )  # fmt: skip
    assert (s.log_level, s.third_party_log_level, s.request_log) == ("debug", "error", True)
    assert s.metrics == MetricsSettings(enabled=False, public=False)


def test_serve_flags_beat_both(tmp_path: Path) -> None:
    s = settings_with(tmp_path, '[server]\nlog_level = "debug"\n', UMG_THIRD_PARTY_LOG_LEVEL="debug")
    args = _parser().parse_args(["serve", "--log-level", "ERROR", "--third-party-log-level", "critical"])
    s = _with_limit_flags(s, args)
    assert (s.log_level, s.third_party_log_level) == ("error", "critical")


@pytest.mark.parametrize(
    ("table", "env", "message"),
    [
        ("[metrics]\npublik = true\n", {}, "unknown keys ['publik']"),
        ('[metrics]\nenabled = "yes"\n', {}, "enabled must be true or false"),
        ("", {"UMG_METRICS_PUBLIC": "maybe"}, "UMG_METRICS_PUBLIC must be true or false"),
        ('[server]\nlog_level = "loud"\n', {}, "log_level must be one of debug, info"),
        ("", {"UMG_THIRD_PARTY_LOG_LEVEL": "chatty"}, "third_party_log_level must be one of"),
        ("[server]\nrequest_log = 1\n", {}, "request_log must be true or false"),
    ],
)
def test_bad_values_are_errors(tmp_path: Path, table: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        settings_with(tmp_path, table, **env)


def test_a_bad_log_level_flag_is_refused() -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--log-level", "loud"])
