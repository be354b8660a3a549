"""What the benchmark measures: the fake provider, this gateway and its competitors.

Owns: starting each target as its own process (the gateways pinned to the gateway core
with `taskset`), waiting until it answers, and stopping it. Every target is sent the same
OpenAI chat request; a `Target` says where and with which headers.

- direct: the fake provider itself (what no gateway can beat).
- ours: `umg serve` on SQLite, with a key that has rpm and tpm limits, live mode through
  the OpenAI adapter to the fake provider (auth, both limits, routing, the provider call
  and a ledger row on every request).
- before: the same as ours, from another checkout (`--compare DIR`), for before/after;
  before-off, before-obs, before-traced, before-log, before-logtm: that checkout as
  ours-off, ours-obs, ours-traced, ours-log, ours-logtm.
- ours-obs: ours at LOG_LEVEL=info, so every request writes its JSON log line (ours runs
  at warning, which skips them), metrics on: telemetry fully on.
- ours-off: ours with the request log and the metrics off (`UMG_REQUEST_LOG=false`,
  `UMG_METRICS=false`): no observer on the driver. ours-obs beside ours-off is the cost
  of the telemetry (docs/observability.md).
- ours-traced: ours-obs with tracing on too, exporting over OTLP/HTTP to a port nobody
  listens on (spans made and batched, every export failing in the SDK's thread): beside
  ours-obs, tracing's own cost; beside ours-off, all the telemetry's.
- ours-log: the request log on (as ours-obs), metrics and tracing off; ours-logtm: the
  same with metrics and tracing on (as ours-traced). ours-logtm beside ours-log is
  issue 10's bar: tracing and metrics on against both off, the request log as in both.
- ours-pg: two `umg serve` processes on one Postgres database, the same key, both pinned
  to the gateway core; load is split evenly between them. before-pg: the same from the
  `--compare` checkout, on a database of its own. With `--budget-usd X` the key of every
  ours / before target has a budget of X USD (far from its limit: what a budget costs).
- floor-hello, floor-proxy: not gateways: a bare ASGI app on Hypercorn as `umg serve`
  runs it, answering at once (hello) or passing the body to the fake provider through
  the gateway's upstream client (proxy); the floor under `ours` (`bench/floor.py`).
- portkey: Portkey's open-source gateway (`bench/competitors.sh` installs it), with the
  fake provider as a custom OpenAI host.
- litellm: LiteLLM's proxy with one deployment pointing at the fake provider and a
  master key (no database, so no ledger: its lightest configuration).
A competitor that is not installed is reported as missing and left out.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from attrs import frozen

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "bench"
CACHE = Path(os.environ.get("UMG_BENCH_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "umg-bench")
LITELLM_VERSION = os.environ.get("LITELLM_VERSION", "1.108.7")
PORTKEY_VERSION = os.environ.get("PORTKEY_VERSION", "1.15.2")
PG_ADMIN_URL = os.environ.get("UMG_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PROVIDER_KEY = "sk-bench-provider"


@frozen
class Target:
    name: str
    urls: tuple[str, ...]  # one model-route URL per gateway process (chat completions by default)
    headers: dict[str, str]
    pids: tuple[int, ...]  # the gateway processes (empty: nothing to account for)
    version: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(extra: dict[str, str]) -> dict[str, str]:
    drop = ("OPENAI_", "ANTHROPIC_", "DATABASE_URL", "UMG_", "LOG_LEVEL", "MOCK_MODE", "OTEL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        proc = subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pinned(args: list[str], cpu: str | None, wrap: tuple[str, ...] = ()) -> list[str]:
    """`args` pinned to `cpu`, run under `wrap` (a command prefix, e.g. valgrind's) if any."""
    args = [*wrap, *args]
    return ["taskset", "-c", cpu, *args] if cpu is not None else args


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    """Until a GET on `url` gets any HTTP answer (or the process dies: then raise)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited early:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s; log: {log}")


def start_provider(stack: ExitStack, tmp: Path) -> tuple[str, int]:
    """The fake provider on this (the load generator's) core; its base URL and pid."""
    port = free_port()
    log = tmp / "provider.log"
    proc = stack.enter_context(_process(["node", str(HERE / "fake_provider.js"), str(port)], _env({}), log))
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/", proc, log)
    return url, proc.pid


def direct(provider: str, provider_pid: int) -> Target:
    return Target("direct", (provider + "/v1/chat/completions",),
                  {"Authorization": f"Bearer {PROVIDER_KEY}"}, (), "fake provider (node " + _node_version() + ")")


def _umg(python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", "server.cli"]


def _create_key(env: dict[str, str], source: Path, budget_usd: str | None = None,
                python: str | None = None) -> str:
    budget = [] if budget_usd is None else ["--budget-usd", budget_usd]
    done = subprocess.run(
        [*_umg(python), "keys", "create", "--tenant", "bench", "--project", "bench", "--name", "bench",
         "--rpm", "1000000000", "--tpm", "1000000000000", *budget, "--json"],
        env=env, capture_output=True, text=True, check=True, cwd=source,
    )
    return str(json.loads(done.stdout)["key"])


def _ours_env(provider: str, database_url: str, source: Path, extra: dict[str, str]) -> dict[str, str]:
    return _env({"DATABASE_URL": database_url, "LOG_LEVEL": "warning", "PYTHONPATH": str(source),
                 "OPENAI_API_KEY": PROVIDER_KEY, "OPENAI_BASE_URL": provider + "/v1", **extra})


def unreachable_collector() -> dict[str, str]:
    """Tracing on, to an OTLP endpoint nobody listens on (the `ours-traced` target): every
    span is made, batched and its export fails in the SDK's thread."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"}


# the telemetry variants of ours (see the module docstring)
TELEMETRY_ENV: dict[str, dict[str, str]] = {
    "ours-obs": {"LOG_LEVEL": "info"},
    "ours-off": {"UMG_REQUEST_LOG": "false", "UMG_METRICS": "false"},
    "ours-log": {"LOG_LEVEL": "info", "UMG_METRICS": "false"},
}


def _ours_version(source: Path) -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=source)
    return f"this gateway from {'this checkout' if source == ROOT else source} @ " + (head.stdout.strip() or "?")


def ours(stack: ExitStack, tmp: Path, provider: str, cpu: str | None, *, processes: int = 1,
         database_url: str | None = None, name: str = "ours", source: Path = ROOT,
         path: str = "/v1/chat/completions", extra_env: dict[str, str] | None = None,
         budget_usd: str | None = None, wrap: tuple[str, ...] = (), ready_timeout: float = 120.0,
         python: str | None = None) -> Target:
    """`umg serve` from `source` (this checkout, or another one given to `--compare`: its
    packages come first on PYTHONPATH, this venv's dependencies serve both); `path` is
    the route the load goes to (`/v1/responses` with `--surface responses`); `budget_usd`:
    the key has that budget (per month), else none; `wrap`: a command prefix each process
    runs under (bench/instr_count.py's valgrind), `ready_timeout` the wait for it to answer;
    `python`: the interpreter that serves (another venv's, to compare interpreters), else
    this one."""
    url = database_url or f"sqlite:///{tmp}/{name}.db"
    env = {**_ours_env(provider, url, source, extra_env or {}), **TELEMETRY_ENV.get(name, {})}
    key = _create_key(env, source, budget_usd, python)  # before serving: no development key is minted
    procs, urls = [], []
    for i in range(processes):
        port = free_port()
        log = tmp / f"{name}-{i}.log"
        args = _pinned([*_umg(python), "serve", "--port", str(port)], cpu, wrap)
        proc = stack.enter_context(_process(args, env, log, cwd=source))
        procs.append((proc, log, port))
        urls.append(f"http://127.0.0.1:{port}{path}")
    for proc, log, port in procs:
        wait_ready(f"http://127.0.0.1:{port}/healthz", proc, log, ready_timeout)
    return Target(name, tuple(urls), {"Authorization": f"Bearer {key}"},
                  tuple(p.pid for p, _, _ in procs), _ours_version(source))


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database for the run, dropped afterwards."""
    import psycopg

    name = f"umg_bench_{os.getpid()}_{int(time.time())}_{secrets.token_hex(3)}"  # one run may make two
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pin_backends(url: str, cpus: set[int]) -> int:
    """Pin the Postgres backends now serving the database of `url` (the gateway's
    connections, not this one) to `cpus`; how many were. Only a run's own database's
    backends: the server's other processes are left as they are."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                            " AND pid <> pg_backend_pid()").fetchall()
    pinned = 0
    for (pid,) in rows:
        try:
            os.sched_setaffinity(int(pid), cpus)
        except (ProcessLookupError, PermissionError):  # gone meanwhile, or not ours to move
            continue
        pinned += 1
    return pinned


def _node_version() -> str:
    found = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return found.stdout.strip()


def floor(stack: ExitStack, tmp: Path, provider: str, cpu: str | None, mode: str,
          wrap: tuple[str, ...] = (), ready_timeout: float = 120.0) -> Target:
    """`bench/floor.py` (`hello` or `proxy`): Hypercorn as `umg serve` runs it, with no
    gateway behind it; beside `ours`, the floor under the gateway's CPU per request."""
    port = free_port()
    name = f"floor-{mode}"
    log = tmp / f"{name}.log"
    env = _env({"PYTHONPATH": str(ROOT)})
    args = _pinned([sys.executable, "-m", "bench.floor", "--port", str(port), "--mode", mode,
                    "--provider", provider], cpu, wrap)
    proc = stack.enter_context(_process(args, env, log))
    wait_ready(f"http://127.0.0.1:{port}/", proc, log, ready_timeout)
    return Target(name, (f"http://127.0.0.1:{port}/v1/chat/completions",),
                  {"Authorization": "Bearer unused"}, (proc.pid,), f"bare Hypercorn app ({mode}), bench/floor.py")


def portkey_path() -> Path:
    return CACHE / f"portkey-{PORTKEY_VERSION}" / "node_modules" / "@portkey-ai" / "gateway"


def portkey(stack: ExitStack, tmp: Path, provider: str, cpu: str | None) -> Target:
    home = portkey_path()
    port = free_port()
    log = tmp / "portkey.log"
    env = _env({"NODE_ENV": "production"})
    args = _pinned(["node", "build/start-server.js", f"--port={port}", "--headless"], cpu)
    proc = stack.enter_context(_process(args, env, log, cwd=home))
    wait_ready(f"http://127.0.0.1:{port}/", proc, log)
    version = json.loads((home / "package.json").read_text())["version"]
    return Target("portkey", (f"http://127.0.0.1:{port}/v1/chat/completions",),
                  {"Authorization": f"Bearer {PROVIDER_KEY}", "x-portkey-provider": "openai",
                   "x-portkey-custom-host": provider + "/v1"},
                  (proc.pid,), f"Portkey gateway {version} (node {_node_version()})")


def litellm_bin() -> Path:
    return CACHE / f"litellm-{LITELLM_VERSION}" / "bin" / "litellm"


def litellm(stack: ExitStack, tmp: Path, provider: str, cpu: str | None) -> Target:
    port = free_port()
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-4o-mini\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: {provider}/v1\n"
        f"      api_key: {PROVIDER_KEY}\n"
        "general_settings:\n"
        "  master_key: sk-bench-master\n"
        "litellm_settings:\n"
        "  set_verbose: false\n"
    )
    log = tmp / "litellm.log"
    env = _env({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"})
    args = _pinned([str(litellm_bin()), "--config", str(config), "--host", "127.0.0.1",
                    "--port", str(port), "--num_workers", "1"], cpu)
    proc = stack.enter_context(_process(args, env, log, cwd=tmp))
    wait_ready(f"http://127.0.0.1:{port}/health/liveliness", proc, log, timeout=240)
    return Target("litellm", (f"http://127.0.0.1:{port}/v1/chat/completions",),
                  {"Authorization": "Bearer sk-bench-master"}, (proc.pid,), f"LiteLLM proxy {LITELLM_VERSION}")


def missing(name: str) -> str | None:
    """Why a target cannot run here, or None."""
    if name == "portkey" and not (portkey_path() / "build" / "start-server.js").exists():
        return "not installed (bench/competitors.sh portkey)"
    if name == "litellm" and not litellm_bin().exists():
        return "not installed (bench/competitors.sh litellm)"
    if name in ("portkey", "direct") and shutil.which("node") is None:
        return "node is missing"
    return None
