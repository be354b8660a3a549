"""server/cli: `umg keys create | list | revoke` run as the real command against a temp
SQLite database; bad flag values; settings precedence; docs/configuration.md kept true."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from adapters.config.jobs import JobSettings
from adapters.config.limits import LimitSettings
from adapters.config.loader import load_settings
from adapters.config.settings import Settings
from adapters.providers.base import Timeouts
from adapters.providers.transport import H11Transport
from adapters.storage.keycache import KEY_CACHE_SECONDS
from adapters.stream_log import StreamSettings
from core.attempts import AttemptPolicy
from core.health import HealthPolicy
from core.retention import RetentionPolicy
from server.cli import _parser
from server.services import build_providers, serving_catalog
from tests.server.conftest import Running

ROOT = Path(__file__).resolve().parents[2]
UMG = str(Path(sys.executable).parent / "umg")
SCRUB = (
    "DATABASE_URL", "PORT", "HOST", "MOCK_MODE", "UMG_CONFIG", "LOG_LEVEL",
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
)  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    return {**env, **extra}


async def umg(db_url: str, *args: str) -> tuple[int, str, str]:
    done = await trio.run_process(
        [UMG, *args],
        env=clean_env(DATABASE_URL=db_url),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/keys.db"


async def create(db_url: str, *args: str) -> dict[str, Any]:
    code, out, err = await umg(db_url, "keys", "create", "--json", *args)
    assert code == 0, err
    created: dict[str, Any] = json.loads(out)
    return created


# ---- keys create -----------------------------------------------------------------------


async def test_create_json_has_key_prefix_id_and_limits(db: str) -> None:
    key = await create(
        db, "--tenant", "acme", "--project", "web", "--rpm", "5", "--tpm", "1000",
        "--budget-usd", "2.50", "--budget-period", "day", "--name", "ci",
    )  # fmt: skip
    assert re.fullmatch(r"umg_live_[a-z2-7]{12}_[a-z2-7]+", key["key"])
    assert key["key"].startswith(f"umg_live_{key['prefix']}_")
    assert key["id"].startswith("key_")
    assert (key["tenant"], key["project"], key["name"]) == ("acme", "web", "ci")
    assert (key["rpm"], key["tpm"], key["budget_usd"], key["budget_period"]) == (
        5, 1000, "2.50", "day",
    )  # fmt: skip
    assert key["revoked_at"] is None


async def test_create_plain_prints_the_key_exactly_once(db: str) -> None:
    code, out, err = await umg(db, "keys", "create", "--tenant", "t", "--project", "p")
    assert code == 0, err
    found = re.findall(r"umg_live_[a-z2-7]+_[a-z2-7]+", out)
    assert len(found) == 1
    assert "shown once" in out


BAD_LIMITS = [
    ("--rpm", "0", "at least 1"),
    ("--rpm", "-3", "at least 1"),
    ("--tpm", "0", "at least 1"),
    ("--tpm", "-1", "at least 1"),
    ("--rpm", "ten", "whole number"),
    ("--tpm", "1.5", "whole number"),
    ("--budget-usd", "-0.01", "non-negative"),
    ("--budget-usd", "NaN", "non-negative"),
    ("--budget-usd", "Infinity", "non-negative"),
    ("--budget-usd", "lots", "decimal amount"),
]


@pytest.mark.parametrize(("flag", "value", "says"), BAD_LIMITS)
def test_parser_rejects_bad_limits(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, says: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["keys", "create", "--tenant", "t", "--project", "p", f"{flag}={value}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and says in err


async def test_bad_limit_exits_nonzero_without_creating_a_key(db: str) -> None:
    for flag, value in (("--rpm", "0"), ("--budget-usd", "-5")):
        code, out, err = await umg(db, "keys", "create", "--tenant", "t", "--project", "p", flag, value)
        assert code == 2 and flag in err
        assert "Traceback" not in err and "umg_live_" not in out
    code, out, _ = await umg(db, "keys", "list", "--json")
    assert code == 0 and json.loads(out) == []


async def test_zero_budget_key_cannot_spend(gateway: Running) -> None:
    key = await create(gateway.services.settings.database_url, "--tenant", "t", "--project", "p", "--budget-usd", "0")
    assert key["budget_usd"] == "0"
    async with gateway.client(key=key["key"]) as client:
        r = await client.post("/v1/responses", json={"model": "gpt-4.1", "input": "hello"})
    assert r.status_code != 200 and "budget" in r.json()["error"]["message"].lower(), r.text


# ---- keys list -------------------------------------------------------------------------


async def test_list_never_shows_secrets(db: str) -> None:
    first = await create(db, "--tenant", "a", "--project", "p1")
    second = await create(db, "--tenant", "b", "--project", "p2")
    _, text, _ = await umg(db, "keys", "list")
    _, as_json, _ = await umg(db, "keys", "list", "--json")
    for key in (first, second):
        secret = key["key"].rsplit("_", 1)[1]
        digest = hashlib.sha256(key["key"].encode()).hexdigest()
        for output in (text, as_json):
            assert key["id"] in output and key["prefix"] in output
            assert secret not in output and digest not in output and key["key"] not in output
    rows = json.loads(as_json)
    assert {r["id"] for r in rows} == {first["id"], second["id"]}
    assert all("key" not in r and "secret_hash" not in r for r in rows)
    _, only_b, _ = await umg(db, "keys", "list", "--tenant", "b", "--json")
    assert [r["id"] for r in json.loads(only_b)] == [second["id"]]


# ---- keys revoke, against a running gateway --------------------------------------------


async def test_revoked_keys_get_401(gateway: Running) -> None:
    db = gateway.services.settings.database_url  # the CLI and the server share the file
    made: list[dict[str, Any]] = []

    async def make() -> None:
        made.append(await create(db, "--tenant", "t", "--project", "p"))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(make)
    by_id, by_prefix, by_key, kept = made
    body = {"model": "gpt-4.1", "input": "hello"}
    for key in made:
        async with gateway.client(key=key["key"]) as client:
            assert (await client.post("/v1/responses", json=body)).status_code == 200

    for key, name in ((by_id, by_id["id"]), (by_prefix, by_prefix["prefix"]), (by_key, by_key["key"])):
        code, out, err = await umg(db, "keys", "revoke", name)
        assert code == 0, err
        assert key["id"] in out and key["key"] not in out

    # The server caches key lookups for KEY_CACHE_SECONDS: another process's revoke
    # applies within that (the bound itself is tested on a fake clock in
    # tests/adapters/test_storage_keycache.py).
    for key in (by_id, by_prefix, by_key):
        async with gateway.client(key=key["key"]) as client:
            with trio.fail_after(KEY_CACHE_SECONDS + 20):
                while (r := await client.post("/v1/responses", json=body)).status_code == 200:
                    await trio.sleep(0.1)
            assert r.status_code == 401
            assert "revoked" in r.json()["error"]["message"]
    async with gateway.client(key=kept["key"]) as client:
        assert (await client.post("/v1/responses", json=body)).status_code == 200

    _, text, _ = await umg(db, "keys", "list")
    assert f"{kept['id']}  {kept['prefix']}  t/p  active" in text
    for key in (by_id, by_prefix, by_key):
        assert f"{key['id']}  {key['prefix']}  t/p  revoked" in text


async def test_webhooks_secret_is_the_one_the_api_shows_and_signs_with(gateway: Running) -> None:
    db = gateway.services.settings.database_url  # beside the running server
    code, out, err = await umg(db, "webhooks", "secret", "--tenant", "t1")
    assert code == 0, err
    async with gateway.client() as client:  # the test key's tenant is t1
        shown = (await client.get("/v1/webhooks/secret")).json()["key"]
    assert out.strip() == shown and shown.startswith("whsec_")
    code, again, _ = await umg(db, "webhooks", "secret", "--tenant", "t1")
    assert again == out  # created once
    _, other, _ = await umg(db, "webhooks", "secret", "--tenant", "t2")
    assert other.strip() not in ("", shown)


async def test_revoke_unknown_key_fails(db: str) -> None:
    code, out, err = await umg(db, "keys", "revoke", "key_doesnotexist")
    assert code == 1 and "no key" in err and out == ""


# ---- configuration errors and flag positions ---------------------------------------------


async def test_bad_database_url_and_config_file_are_one_line_errors(tmp_path: Path) -> None:
    code, _, err = await umg("mysql://x/y", "keys", "list")
    assert code == 2 and "unsupported database URL" in err and "Traceback" not in err
    code, _, err = await umg(
        f"sqlite:///{tmp_path}/k.db", "--config", str(tmp_path / "missing.toml"), "keys", "list"
    )
    assert code == 2 and "cannot read config file" in err and "Traceback" not in err


async def test_database_url_flag_works_before_or_after_the_subcommand(tmp_path: Path) -> None:
    env_db, flag_db = f"sqlite:///{tmp_path}/env.db", f"sqlite:///{tmp_path}/new/dir/flag.db"
    code, out, err = await umg(
        env_db, "keys", "create", "--tenant", "t", "--project", "p", "--json", "--database-url", flag_db
    )
    assert code == 0, err
    assert (tmp_path / "new" / "dir" / "flag.db").is_file()  # the directory is created
    key = json.loads(out)
    code, out, err = await umg(env_db, "--database-url", flag_db, "keys", "list", "--json")
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)] == [key["id"]]
    _, out, _ = await umg(env_db, "keys", "list", "--json")
    assert json.loads(out) == []


# ---- precedence: flags > environment > file > defaults -----------------------------------


def test_settings_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "umg.toml"
    cfg.write_text(
        'database_url = "sqlite:///file.db"\n'
        '[server]\nhost = "10.0.0.1"\nport = 4001\nlog_level = "warning"\n'
    )
    defaults = load_settings({})
    assert (defaults.host, defaults.port, defaults.database_url, defaults.log_level) == (
        "127.0.0.1", 3000, "sqlite:///data/gateway.db", "info",
    )  # fmt: skip
    from_file = load_settings({}, config_path=str(cfg))
    assert (from_file.host, from_file.port, from_file.database_url, from_file.log_level) == (
        "10.0.0.1", 4001, "sqlite:///file.db", "warning",
    )  # fmt: skip
    assert load_settings({"UMG_CONFIG": str(cfg)}) == from_file
    env = {"HOST": "10.0.0.2", "PORT": "4002", "DATABASE_URL": "sqlite:///env.db", "LOG_LEVEL": "debug"}
    from_env = load_settings(env, config_path=str(cfg))
    assert (from_env.host, from_env.port, from_env.database_url, from_env.log_level) == (
        "10.0.0.2", 4002, "sqlite:///env.db", "debug",
    )  # fmt: skip
    flags = load_settings(
        env, config_path=str(cfg), host="10.0.0.3", port=4003, database_url="sqlite:///flag.db"
    )
    assert (flags.host, flags.port, flags.database_url) == ("10.0.0.3", 4003, "sqlite:///flag.db")
    assert load_settings(env, config_path=str(cfg), port=0).port == 0  # "any free port" wins too


def test_mock_mode_default_follows_provider_keys() -> None:
    assert load_settings({}).mock_mode is True
    live = load_settings({"OPENAI_API_KEY": "sk-test"})
    assert live.mock_mode is False and [p.name for p in live.providers] == ["openai"]
    assert load_settings({"OPENAI_API_KEY": "sk-test", "MOCK_MODE": "yes"}).mock_mode is True


# ---- docs/configuration.md cannot rot -----------------------------------------------------

DOC = ROOT / "docs" / "configuration.md"


def doc_toml() -> str:
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(), flags=re.S)
    complete = [b for b in blocks if "[[providers.compatible]]" in b and "[catalog" in b]
    assert len(complete) == 1, "docs/configuration.md needs one complete ```toml example"
    return str(complete[0])


def test_the_example_shows_defaults_except_where_it_says_so() -> None:
    """A line of the example either holds the real default or says `example, not the default`."""
    defaults = Settings()
    objects: dict[str, Any] = {
        "": defaults, "server": defaults, "limits": defaults.limits, "jobs": defaults.jobs,
        "attempts": defaults.attempts, "timeouts": defaults.timeouts, "health": defaults.health,
        "streams": defaults.streams, "retention": defaults.retention,
    }  # fmt: skip
    table = ""
    checked = 0
    for line in doc_toml().splitlines():
        header = re.match(r"^\[([a-z_.]+)\]", line)
        if header:
            table = header.group(1)
            continue
        setting = re.match(r"^(\w+)\s*=\s*([^#]+?)\s*(#.*)?$", line)
        if not setting or table not in objects or line.startswith("[["):
            continue
        key, value, comment = setting.group(1), setting.group(2), setting.group(3) or ""
        if "example, not the default" in comment:
            continue
        documented = tomllib.loads(f"v = {value}")["v"]
        real = getattr(objects[table], key)
        assert documented == real, f"[{table}] {key} = {value} but the default is {real!r}"
        checked += 1
    assert checked >= 25


async def test_documented_example_config_loads(tmp_path: Path) -> None:
    text = doc_toml()
    raw = tomllib.loads(text)
    cfg = tmp_path / "umg.toml"
    cfg.write_text(text)
    settings = load_settings({}, config_path=str(cfg))
    assert settings.host == raw["server"]["host"] and settings.port == raw["server"]["port"]
    assert settings.database_url == raw["database_url"]
    assert settings.mock_mode == raw["mock_mode"]
    # every tuning field is shown in the example, with the value the loader reads
    for section, cls, value in (
        ("limits", LimitSettings, settings.limits),
        ("jobs", JobSettings, settings.jobs),
        ("attempts", AttemptPolicy, settings.attempts),
        ("timeouts", Timeouts, settings.timeouts),
        ("health", HealthPolicy, settings.health),
        ("streams", StreamSettings, settings.streams),
        ("retention", RetentionPolicy, settings.retention),
    ):
        names = {a.name for a in attrs.fields(cls)}
        assert set(raw[section]) == names, section
        for name in names:
            assert getattr(value, name) == raw[section][name], f"{section}.{name}"
    compatible = [p for p in settings.providers if p.kind == "openai_compatible"]
    assert [p.name for p in compatible] == [c["name"] for c in raw["providers"]["compatible"]]
    catalog = settings.catalog()  # validates the overrides against core/catalog.py's rules
    for name in raw["catalog"]["models"]:
        if not raw["catalog"]["models"][name].get("remove"):
            assert name in catalog.models
    for c in raw["providers"]["compatible"]:
        for model in c["models"]:
            assert f"{c['name']}/{model}" in catalog.models
    for alias in raw["catalog"].get("aliases", {}):
        assert alias in catalog.aliases
    # the same file with the providers' key variables set loads in live mode and builds
    env = {
        raw["providers"]["openai"]["api_key_env"]: "sk-test-openai-0000000000",
        raw["providers"]["anthropic"]["api_key_env"]: "sk-ant-test",
        "MOCK_MODE": "false",
    }
    live = load_settings(env, config_path=str(cfg))
    assert {p.name for p in live.providers} >= {"openai", "anthropic"}
    transport = H11Transport()
    providers = build_providers(live, serving_catalog(live), transport)
    await transport.aclose()
    assert {"openai", "anthropic", *(c["name"] for c in raw["providers"]["compatible"])} <= set(providers)


def test_doc_names_every_environment_variable_and_flag() -> None:
    doc = DOC.read_text()
    source = "\n".join(p.read_text() for p in sorted((ROOT / "adapters" / "config").glob("*.py")))
    env_names = set(re.findall(r'"([A-Z][A-Z0-9]*_[A-Z0-9_]+|PORT|HOST)"', source))
    assert {"DATABASE_URL", "PORT", "HOST", "MOCK_MODE", "UMG_CONFIG", "LOG_LEVEL"} <= env_names
    for name in env_names:
        assert f"`{name}`" in doc, name
    flags: set[str] = set()
    stack = [_parser()]
    while stack:
        parser = stack.pop()
        for action in parser._actions:
            flags.update(o for o in action.option_strings if o.startswith("--") and o != "--help")
            if action.choices and isinstance(action.choices, dict):
                stack.extend(action.choices.values())
    for flag in flags:
        assert f"`{flag}" in doc, flag


def test_the_startup_banner_names_the_live_providers_and_ends_with_the_key() -> None:
    from adapters.config.loader import load_settings
    from server.commands.serve import startup_banner

    live = load_settings({"OPENAI_API_KEY": "sk-a-secret-1234", "ANTHROPIC_API_KEY": "sk-b-5678"})
    lines = startup_banner(live, "http://127.0.0.1:3000", "Created ...: umg_live_x")
    assert lines == [
        "Mode: live (providers: anthropic, openai)",
        "Listening on http://127.0.0.1:3000 (API reference: http://127.0.0.1:3000/docs)",
        "Created ...: umg_live_x",
    ]
    assert "sk-" not in "".join(lines)
