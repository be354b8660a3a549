"""`umg serve` as a real process: first start on an empty database, settings precedence,
the `make run` recipe, and SIGTERM (stop accepting, end streams explicitly, flush the
ledger, exit 0)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import trio

from adapters.storage import open_storage
from adapters.storage.records import UsageRecord

ROOT = Path(__file__).resolve().parents[2]
UMG = str(Path(sys.executable).parent / "umg")
SCRUB = (
    "DATABASE_URL", "PORT", "HOST", "MOCK_MODE", "UMG_CONFIG", "LOG_LEVEL",
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
)  # fmt: skip
KEY = re.compile(r"umg_live_[a-z2-7]{12}_[a-z2-7]+")
LISTENING = re.compile(r"gateway listening on (http://[\d.]+:(\d+))")
# A bound on a child's start, not a speed check: three processes starting at once on a
# loaded 2-core machine took over 20 s (a whole suite run at load average 8).
START_TIMEOUT = 60.0


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    return {**env, **extra}


T = TypeVar("T")
# Where a child's port number does not matter, it is given `--port 0`: it binds any free
# port and says which (`Server.started`), so no other process can take it first. Where
# the number matters (which setting chose it), `on_free_ports` chooses and retries.
ANY_PORT = "0"
PORT_TRIES = 5


class PortTaken(Exception):
    """A child could not bind the port it was given: another process (a test on another
    pytest-xdist worker) bound it between its choice and the child's bind."""


def free_ports(n: int) -> list[int]:
    """n distinct ports that were free a moment ago (all held at once while choosing).
    Another process may bind one before a child does: use them through `on_free_ports`."""
    held = [socket.socket() for _ in range(n)]
    try:
        for s in held:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()


async def on_free_ports(n: int, run: Callable[[list[int], int], Awaitable[T]]) -> T:
    """`run(ports, attempt)` on `n` ports that were free a moment ago, run again on fresh
    ones (up to `PORT_TRIES` times) when a child found its port taken meanwhile
    (`PortTaken`): choosing a port and binding it are two steps. `attempt` (0, 1, ...)
    lets a run keep its files apart from a failed run's."""
    for attempt in range(PORT_TRIES):
        try:
            return await run(free_ports(n), attempt)
        except* PortTaken:
            if attempt == PORT_TRIES - 1:
                raise
    raise AssertionError("not reached")


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while not check():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Server:
    """A `umg serve` child process whose stdout and stderr are collected as they come."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.out = bytearray()
        self.err = bytearray()
        self.done = 0  # output pipes at EOF

    @property
    def stdout(self) -> str:
        return self.out.decode(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.decode(errors="replace")

    async def collect(self, stream: trio.abc.ReceiveStream | None, into: bytearray) -> None:
        assert stream is not None
        while chunk := await stream.receive_some():
            into.extend(chunk)
        self.done += 1

    async def started(self) -> str:
        """Wait for the 'listening' log line (logs are on stdout); return the base URL."""
        await wait_until(
            lambda: LISTENING.search(self.stdout) is not None or self.proc.returncode is not None,
            START_TIMEOUT,
            "the server to listen",
        )
        found = LISTENING.search(self.stdout)
        if found is None:
            await wait_until(lambda: self.done == 2, 5.0, "the output pipes to close")
            if "cannot serve on" in self.stderr and "in use" in self.stderr:
                raise PortTaken(self.stderr.strip())
        assert found, f"server exited early ({self.proc.returncode}): {self.stdout}{self.stderr}"
        return found.group(1)

    async def dev_key(self) -> str:
        await wait_until(
            lambda: KEY.search(self.stdout) is not None, START_TIMEOUT, "the development key"
        )
        found = KEY.search(self.stdout)
        assert found
        return found.group(0)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def exited(self, timeout: float) -> int:
        with trio.fail_after(timeout):
            code = await self.proc.wait()
        # let the collectors drain the pipes, so assertions see the whole output
        await wait_until(lambda: self.done == 2, 5.0, "the output pipes to close")
        return code

    async def stopped(self, timeout: float = 15.0) -> None:
        """SIGTERM, then assert a clean exit."""
        self.terminate()
        code = await self.exited(timeout)
        assert code == 0, f"exit status {code}; output:\n{self.stdout}{self.stderr}"

    @property
    def printed(self) -> list[str]:
        """The lines of stdout that are not JSON log lines (the banner, the key)."""
        return [line for line in self.stdout.splitlines() if not line.startswith("{")]

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines (stdout)."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]


@asynccontextmanager
async def umg_serve(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> AsyncIterator[Server]:
    proc = await trio.lowlevel.open_process(
        [UMG, *args],
        env=clean_env(**(env or {})),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    server = Server(proc)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.collect, proc.stdout, server.out)
            nursery.start_soon(server.collect, proc.stderr, server.err)
            yield server
            if proc.returncode is None:
                server.terminate()
            with trio.fail_after(30):
                await proc.wait()
    finally:
        if proc.returncode is None:  # a failed assertion: don't leave it running
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()


async def ledger(db_path: Path, tenant: str) -> list[UsageRecord]:
    storage = open_storage(f"sqlite:///{db_path}")
    try:
        now = datetime.now(UTC)
        return await storage.usage_rows(tenant, now - timedelta(hours=1), now + timedelta(hours=1))
    finally:
        await storage.close()


# ---- first start -----------------------------------------------------------------------


async def test_first_start_creates_db_prints_a_dev_key_once_and_serves(tmp_path: Path) -> None:
    db = tmp_path / "state" / "gateway.db"  # the directory does not exist yet
    env = {"DATABASE_URL": f"sqlite:///{db}"}
    async with umg_serve("serve", "--port", ANY_PORT, env=env) as server:
        url = await server.started()
        assert re.fullmatch(r"http://127\.0\.0\.1:[1-9]\d*", url), url
        key = await server.dev_key()
        assert server.stdout.count("umg_live_") == 1
        # the banner: mode, address, then the key last
        assert server.printed[-3:] == [
            "Mode: mock (the built-in Mock provider answers every model; set OPENAI_API_KEY"
            " or ANTHROPIC_API_KEY for live mode)",
            f"Listening on {url} (API reference: {url}/docs)",
            f"Created a development API key (shown once; an admin key, tenant dev, project dev): {key}",
        ]
        assert any("mock mode" in entry["message"] for entry in server.logs())
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            r = await client.post(
                "/v1/responses",
                headers={"authorization": f"Bearer {key}"},
                json={"model": "gpt-4.1", "input": "first light"},
            )
            assert r.status_code == 200, r.text
            assert "first light" in r.json()["output"][0]["content"][0]["text"]
            assert r.json()["gateway"]["provider"] == "openai"  # the Mock keeps the label
            admin = await client.get("/v1/admin/keys", headers={"authorization": f"Bearer {key}"})
            assert admin.status_code == 200, admin.text  # the development key is an admin key
            assert [k["tenant"] for k in admin.json()["data"]] == ["dev"]
        await server.stopped()
    assert db.is_file()
    [row] = await ledger(db, "dev")
    assert (row.status, row.model, row.endpoint) == ("ok", "gpt-4.1", "responses")

    async with umg_serve("serve", "--port", ANY_PORT, env=env) as again:
        url = await again.started()
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            r = await client.get("/v1/models", headers={"authorization": f"Bearer {key}"})
            assert r.status_code == 200
        await again.stopped()
    assert "umg_live_" not in again.stdout  # not on the second start
    assert again.printed[-1].startswith("API key: keys already exist")
    assert "Traceback" not in again.stdout + again.stderr


async def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        async with umg_serve(
            "serve", "--port", str(port), env={"DATABASE_URL": f"sqlite:///{tmp_path}/g.db"}
        ) as server:
            assert await server.exited(20) == 1
    assert f"cannot serve on 127.0.0.1:{port}" in server.stderr
    assert "Traceback" not in server.stdout + server.stderr


async def test_a_port_taken_after_it_was_chosen_is_chosen_again(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """`on_free_ports`: a child whose port another process bound after it was chosen
    (here this test, listening on it) fails with PortTaken, and the run is made again on
    a fresh port."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = int(busy.getsockname()[1])
        choices = iter([[taken]])
        real = free_ports
        monkeypatch.setattr(sys.modules[__name__], "free_ports", lambda n: next(choices, None) or real(n))
        tried: list[int] = []

        async def run(ports: list[int], attempt: int) -> str:
            tried.append(ports[0])
            env = {"DATABASE_URL": f"sqlite:///{tmp_path}/{attempt}.db"}
            async with umg_serve("serve", "--port", str(ports[0]), env=env) as server:
                url = await server.started()
                await server.stopped()
            return url

        url = await on_free_ports(1, run)
    assert tried[0] == taken and len(tried) == 2 and tried[1] != taken
    assert url == f"http://127.0.0.1:{tried[1]}"


# ---- precedence: flags > environment > file --------------------------------------------


async def test_flags_beat_environment_beat_config_file(tmp_path: Path) -> None:
    seen = await on_free_ports(3, lambda ports, attempt: precedence(tmp_path / str(attempt), ports))
    # each run listened on the port its winning setting gave
    assert seen["urls"] == {name: f"http://127.0.0.1:{port}" for name, port in seen["ports"].items()}


async def precedence(tmp_path: Path, ports: list[int]) -> dict[str, dict[str, Any]]:
    """The three runs on `ports` (file, env, flag); what each listened on."""
    tmp_path.mkdir()
    file_port, env_port, flag_port = ports
    cfg = tmp_path / "umg.toml"
    cfg.write_text(
        f'database_url = "sqlite:///{tmp_path}/file.db"\n[server]\nport = {file_port}\n'
    )
    runs = {
        "flag": (("--config", str(cfg), "serve", "--port", str(flag_port)),
                 {"PORT": str(env_port), "DATABASE_URL": f"sqlite:///{tmp_path}/env.db"}),
        "env": (("serve",),
                {"UMG_CONFIG": str(cfg), "PORT": str(env_port)}),
        "file": (("serve", "--config", str(cfg), "--database-url", f"sqlite:///{tmp_path}/flag.db"),
                 {}),
    }  # fmt: skip
    seen: dict[str, str] = {}

    async def run(name: str, args: tuple[str, ...], env: dict[str, str]) -> None:
        async with umg_serve(*args, env=env) as server:
            seen[name] = await server.started()
            await server.stopped()

    # "flag" and "env" both see PORT=env_port; run "flag" first so only one binds it.
    await run("flag", *runs["flag"])
    async with trio.open_nursery() as nursery:
        for name in ("env", "file"):
            nursery.start_soon(run, name, *runs[name])
    # databases: flag run used $DATABASE_URL over the file's; env run used the file's;
    # the last run's --database-url beat the file's.
    assert {p.name for p in tmp_path.glob("*.db")} == {"env.db", "file.db", "flag.db"}
    assert len(await ledger(tmp_path / "env.db", "dev")) == 0  # migrated, usable
    for db in ("env.db", "file.db", "flag.db"):
        storage = open_storage(f"sqlite:///{tmp_path}/{db}")
        try:
            assert await storage.count_keys() == 1  # each got its own first-start key
        finally:
            await storage.close()
    return {"urls": seen, "ports": {"flag": flag_port, "env": env_port, "file": file_port}}


# ---- make run --------------------------------------------------------------------------


def make_env() -> dict[str, str]:
    """No inherited make state: under `make test` this runs as a sub-make otherwise."""
    return {k: v for k, v in clean_env().items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}


async def test_make_run_recipe_matches_the_readme(tmp_path: Path) -> None:
    def dry_run(*args: str) -> list[str]:
        done = subprocess.run(
            ["make", "--no-print-directory", "-n", "run", *args], cwd=ROOT, env=make_env(),
            capture_output=True,
            text=True, check=True,
        )  # fmt: skip
        return done.stdout.strip().splitlines()

    assert dry_run()[-1] == (
        ".venv/bin/umg serve --host 127.0.0.1 --port 3000 --database-url sqlite:///data/gateway.db"
    )
    fresh = dry_run(f"VENV={tmp_path}/venv")  # no venv yet: it is created first
    assert any(f"-m venv {tmp_path}/venv" in line for line in fresh)
    assert any("pip install" in line and "-c constraints.txt" in line for line in fresh)
    assert fresh[-1].startswith(f"{tmp_path}/venv/bin/umg serve ")

    command = dry_run(f"PORT={ANY_PORT}")[-1].split()
    assert command[0] == ".venv/bin/umg" and command[command.index("--port") + 1] == ANY_PORT
    async with umg_serve(*command[1:], cwd=tmp_path) as server:  # the same command line
        assert (await server.started()).startswith("http://127.0.0.1:")
        key = await server.dev_key()
        await server.stopped()
    lines = server.printed
    assert lines[0].startswith("Mode: mock") and lines[1].startswith("Listening on http://")
    assert lines[2].endswith(key)  # the key comes last, after the mode and the address
    assert (tmp_path / "data" / "gateway.db").is_file()


# ---- SIGTERM ---------------------------------------------------------------------------

DRAIN = 2.0
GRACEFUL = DRAIN + 10.0  # Hypercorn's graceful timeout for `--drain-seconds DRAIN` (server/serve.py)


async def read_stream(
    client: httpx.AsyncClient, key: str, scenario: str, events: list[tuple[float, str, Any]]
) -> None:
    body = {"model": "gpt-4.1", "input": "drain me", "metadata": {"mock_scenario": scenario}}
    headers = {"authorization": f"Bearer {key}"}
    async with client.stream("POST", "/v1/responses/stream", json=body, headers=headers) as r:
        assert r.status_code == 200
        name = ""
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((trio.current_time(), name, json.loads(line[6:])))


async def test_sigterm_ends_streams_explicitly_refuses_connections_and_flushes_ledger(
    tmp_path: Path,
) -> None:
    db = tmp_path / "gateway.db"
    async with umg_serve(
        "serve", "--port", "0", "--drain-seconds", str(DRAIN),
        env={"DATABASE_URL": f"sqlite:///{db}"},
    ) as server:
        url = await server.started()
        key = await server.dev_key()
        short: list[tuple[float, str, Any]] = []  # finishes inside the drain window
        long: list[tuple[float, str, Any]] = []  # would take 40 s: must be ended
        async with (
            httpx.AsyncClient(base_url=url, timeout=30) as streams,
            httpx.AsyncClient(base_url=url, timeout=30) as idle,
            trio.open_nursery() as nursery,
        ):
            assert (await idle.get("/healthz")).status_code == 200  # stays kept-alive
            nursery.start_soon(read_stream, streams, key, "chunk_delay_ms=100;output_tokens=12", short)
            nursery.start_soon(read_stream, streams, key, "chunk_delay_ms=100;output_tokens=400", long)

            def deltas(events: list[tuple[float, str, Any]]) -> int:
                return sum(1 for _, name, _ in events if name == "response.output_text.delta")

            await wait_until(lambda: deltas(short) >= 2 and deltas(long) >= 2, 60, "both streams")
            signalled = trio.current_time()
            server.terminate()

            refused = False
            # a hang guard; that the refusal came while the streams went on is checked next
            with trio.move_on_after(60):
                while not refused:
                    try:
                        async with httpx.AsyncClient(base_url=url, timeout=1) as fresh:
                            await fresh.get("/healthz")
                    except httpx.ConnectError:
                        refused = True
                    else:
                        await trio.sleep(0.02)
            assert refused, "new connections still accepted while draining"
            assert long[-1][1] == "response.output_text.delta"  # ... while streams go on

        assert await server.exited(60) == 0  # a hang guard
        exited = trio.current_time()

    # Bounds: "after the drain window, and before what would happen without the behaviour"
    # (the long stream's 40 s, Hypercorn's graceful timeout), none a speed check.
    # the short stream finished on its own, inside the drain window
    assert short[-1][1] == "response.completed"
    assert short[-1][2]["response"]["status"] == "completed"
    # the long one was ended explicitly, after the drain window, never silently cut
    names = [name for _, name, _ in long]
    assert names[-2:] == ["error", "response.failed"]
    assert long[-2][2]["code"] == "service_unavailable"
    assert "shutting down" in long[-2][2]["message"]
    ended = long[-1][0] - signalled
    assert DRAIN - 0.2 <= ended < 30, ended  # cut by the drain window, not after its 40 s
    # the kept-alive idle connection did not hold the process for the graceful timeout
    assert exited - signalled < GRACEFUL, exited - signalled
    logs = " ".join(entry["message"] for entry in server.logs())
    assert "shutting down" in logs and "ending 1 open stream(s)" in logs
    assert "Traceback" not in server.stdout + server.stderr

    rows = await ledger(db, "dev")
    assert len(rows) == 2 and all(r.stream and r.endpoint == "responses" for r in rows)
    [done] = [r for r in rows if r.status == "ok"]
    [cut] = [r for r in rows if r.status != "ok"]
    assert done.output_tokens == 12 and done.error_code is None
    assert cut.error_code == "service_unavailable"
    streamed = sum(1 for name in names if name == "response.output_text.delta")
    assert 0 < streamed < 400
    assert cut.output_tokens == streamed and cut.cost > 0  # what was sent is billed


# ---- readiness during shutdown (in-process) ---------------------------------------------

PRESTOP = 3.0  # generous: the checks inside the window must finish even on a loaded machine
# Long, so that waiting for it (which serve() must not do with nothing in flight) and
# Hypercorn's graceful timeout (drain + 10 s) are far from any load's delays.
PRESTOP_DRAIN = 30.0


async def http_get(
    stream: trio.SocketStream, conn: Any, path: str
) -> tuple[int, dict[str, Any]]:
    """One GET on an existing HTTP/1.1 connection (`conn` is its h11 client state)."""
    import h11

    await stream.send_all(
        conn.send(h11.Request(method="GET", target=path, headers=[("host", "gateway")]))
        + conn.send(h11.EndOfMessage())
    )
    status, body = 0, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            conn.start_next_cycle()
            return status, json.loads(body)
        else:
            raise AssertionError(f"unexpected {event!r}")


async def test_readyz_says_draining_on_a_kept_alive_connection_before_the_listener_closes(
    tmp_path: Path,
) -> None:
    import h11

    from server.serve import serve
    from server.services import build_services
    from tests.server.conftest import test_settings as settings_for

    services = await build_services(settings_for(tmp_path))
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(
            lambda task_status: serve(
                services, host="127.0.0.1", port=0, shutdown=stop.wait, drain_seconds=PRESTOP_DRAIN,
                prestop_seconds=PRESTOP, task_status=task_status,
            )
        )  # fmt: skip
        port = int(url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        conn = h11.Connection(h11.CLIENT)
        with trio.fail_after(60):  # a hang guard
            status, body = await http_get(stream, conn, "/readyz")
        assert status == 200 and body["status"] == "ready"

        stop.set()  # what SIGTERM does
        signalled = trio.current_time()
        # No clock here: checks that ran past the pre-stop would fail on their own (the
        # listener closes), so the bound is a hang guard.
        with trio.fail_after(60):
            # The same kept-alive connection: 503 "draining" at once.
            status, body = await http_get(stream, conn, "/readyz")
            assert status == 503
            assert body["status"] == "draining" and body["checks"]["draining"] is True
            # During the pre-stop the listener still accepts, and still serves.
            async with httpx.AsyncClient(base_url=url, timeout=5) as fresh:
                assert (await fresh.get("/readyz")).status_code == 503
                assert (await fresh.get("/healthz")).status_code == 200
        accepting_until = trio.current_time()

        refused = False
        with trio.move_on_after(60):  # a hang guard: without a close it would run forever
            while not refused:
                try:
                    probe = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    refused = True
                else:
                    await probe.aclose()
                    accepting_until = trio.current_time()
                    await trio.sleep(0.02)
        assert refused, "the listener never closed"
        refused_at = trio.current_time()
        assert accepting_until - signalled >= PRESTOP - 0.1, accepting_until - signalled
        # Once the listener is closed, the idle kept-alive connection is closed too: not
        # kept until Hypercorn's graceful timeout (drain + 10 s) ends serve().
        with trio.fail_after(60):  # a hang guard
            try:
                rest = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                rest = b""
        assert rest == b""
        assert trio.current_time() - refused_at < PRESTOP_DRAIN, trio.current_time() - refused_at
        await stream.aclose()
    # serve() returned: nothing was in flight, so no drain window was waited for.
    assert trio.current_time() - signalled < PRESTOP + PRESTOP_DRAIN


async def test_sigterm_ends_websocket_requests_explicitly_and_closes_with_1001(
    tmp_path: Path,
) -> None:
    from trio_websocket import ConnectionClosed, open_websocket_url

    db = tmp_path / "gateway.db"
    frames: list[tuple[float, dict[str, Any]]] = []
    async with umg_serve(
        "serve", "--port", "0", "--drain-seconds", str(DRAIN),
        env={"DATABASE_URL": f"sqlite:///{db}"},
    ) as server:
        url = await server.started()
        key = await server.dev_key()
        ws_url = url.replace("http://", "ws://", 1) + "/v1/responses/ws"
        headers = [(b"authorization", f"Bearer {key}".encode())]
        request = {
            "model": "gpt-4.1", "input": "drain me",
            "metadata": {"mock_scenario": "chunk_delay_ms=100;output_tokens=400"},
        }  # fmt: skip
        async with open_websocket_url(ws_url, extra_headers=headers) as ws:
            await ws.send_message(
                json.dumps({"type": "response.create", "id": "w", "request": request})
            )

            def deltas() -> int:
                return sum(1 for _, f in frames if f["type"] == "response.output_text.delta")

            with trio.fail_after(60):  # a hang guard
                while deltas() < 2:
                    frames.append((trio.current_time(), json.loads(await ws.get_message())))
            signalled = trio.current_time()
            server.terminate()
            with trio.fail_after(60):  # a hang guard: the request alone would take 40 s
                try:
                    while True:
                        frames.append((trio.current_time(), json.loads(await ws.get_message())))
                except ConnectionClosed as closed:
                    closed_at = trio.current_time()
                    assert closed.reason is not None
                    close_code = closed.reason.code
        assert await server.exited(60) == 0  # a hang guard
        exited = trio.current_time()

    kinds = [f["type"] for _, f in frames]
    assert kinds[-2:] == ["error", "response.failed"], kinds[-5:]
    assert frames[-2][1]["code"] == "service_unavailable"
    # after the drain window; cut by it, not after the request's 40 s
    assert DRAIN - 0.2 <= frames[-1][0] - signalled < 30, frames[-1][0] - signalled
    assert close_code == 1001 and closed_at >= frames[-1][0]
    # not held for Hypercorn's graceful timeout
    assert exited - signalled < GRACEFUL, exited - signalled
    assert "Traceback" not in server.stdout + server.stderr
    [row] = await ledger(db, "dev")
    assert row.endpoint == "responses.ws" and row.error_code == "service_unavailable"
    assert row.output_tokens == deltas() and row.cost > 0


async def test_a_served_process_logs_json_lines_on_stdout_with_one_per_request(tmp_path: Path) -> None:
    """Startup, one line per request (the client's x-request-id in it), shutdown; nothing
    from httpx or hypercorn at the default levels; `--log-level warning` drops info lines."""
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/gateway.db"}
    async with umg_serve("serve", "--port", ANY_PORT, env=env) as server:
        url = await server.started()
        key = await server.dev_key()
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            r = await client.post(
                "/v1/responses",
                headers={"authorization": f"Bearer {key}", "x-request-id": "proc-1"},
                json={"model": "mock-fast", "input": "hello"},
            )
            assert r.status_code == 200, r.text
        await server.stopped()
    logs = server.logs()
    events = [entry.get("event") for entry in logs if entry.get("event")]
    assert events[0] == "startup" and events[-1] == "shutdown"
    (line,) = [entry for entry in logs if entry.get("event") == "request"]
    assert (line["client_request_id"], line["status"], line["model"]) == ("proc-1", "ok", "mock-fast")
    assert server.stdout.count(key) == 1 and key not in server.stderr  # the banner only
    assert all(key not in json.dumps(entry) for entry in logs)
    assert not [e for e in logs if e["logger"].startswith(("httpx", "httpcore", "hypercorn"))]

    async with umg_serve("serve", "--port", ANY_PORT, "--log-level", "warning", env=env) as quiet:
        async with httpx.AsyncClient(timeout=10) as client:
            await wait_until(lambda: "Listening on" in quiet.stdout, START_TIMEOUT, "the banner")
            banner = re.search(r"Listening on (http://\S+)", quiet.stdout)
            assert banner
            r = await client.post(
                f"{banner.group(1)}/v1/responses",
                headers={"authorization": f"Bearer {key}"},
                json={"model": "mock-fast", "input": "hello"},
            )
            assert r.status_code == 200
        await quiet.stopped()
    assert [e for e in quiet.logs() if e["level"] == "info"] == []
