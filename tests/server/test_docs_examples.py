"""The documentation's examples run, against a real gateway, and say what the docs claim.

Every ```bash block of `docs/curl-examples.md` (the original design's ten requests) and
every curl / ```python block of `README.md` is run as written: curl through bash, Python
through this interpreter in a subprocess. Only the base URL is swapped for the test
gateway's, `<API_KEY>` / `<JOB_ID>` are filled in, and README examples get the key from
`UMG_API_KEY`, as the README tells readers to set it. A curl config file in a private
`CURL_HOME` adds the HTTP status to curl's output, so the commands stay verbatim.

A last test checks that every route the app registers is documented in `docs/api.md`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import trio

from core.sse import SSEDecoder, SSEEvent
from server.app import create_app
from tests.server.conftest import Running

ROOT = Path(__file__).resolve().parents[2]
DOC_URL = "http://localhost:3000"
STATUS_MARK = "##status="  # curl reads a write-out starting with "@" as a file name
Json = dict[str, Any]


def code_blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(), re.S | re.M)


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment for curl / Python children: no proxies, our curl config."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    curl_home = tmp_path / "curl-home"
    curl_home.mkdir(exist_ok=True)
    (curl_home / ".curlrc").write_text(f'write-out = "\\n{STATUS_MARK}%{{http_code}}\\n"\nmax-time = 30\n')
    return {**env, "CURL_HOME": str(curl_home), "NO_PROXY": "*", **extra}


async def run_curl(script: str, env: dict[str, str]) -> tuple[int, str]:
    """Run one curl example through bash; (HTTP status, body)."""
    done = await trio.run_process(
        ["bash", "-c", script], capture_stdout=True, capture_stderr=True, check=False, env=env
    )
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    body, mark, status = out.rpartition("\n" + STATUS_MARK)
    assert mark, f"no status in curl output: {out!r}"
    return int(status.strip()), body


def sse_events(body: str) -> list[tuple[str | None, Json]]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = decoder.feed(body.encode()) + decoder.close()
    return [(e.event, json.loads(e.data)) for e in events if e.data != "[DONE]"]


def output_text(response: Json) -> str:
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


def check_response(body: Json, says: str, *, model: str = "gpt-4.1") -> Json:
    assert body["object"] == "response"
    assert body["status"] == "completed"
    assert body["model"] == model
    assert says in output_text(body)
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0
    gateway: Json = body["gateway"]
    assert gateway["attempts"] and gateway["attempts"][-1]["outcome"] == "ok"
    assert Decimal(gateway["cost_usd"]) > 0
    return gateway


def check_stream(body: str, says: str) -> None:
    events = sse_events(body)
    names = [name for name, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"
    assert all(name == data["type"] for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    streamed = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert says in streamed
    final = events[-1][1]["response"]
    assert output_text(final) == streamed
    assert final["usage"]["output_tokens"] > 0
    assert Decimal(final["gateway"]["cost_usd"]) > 0


def check_chat(body: Json, says: str) -> None:
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert says in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert body["gateway"]["provider"] == "openai"


# -- docs/curl-examples.md ------------------------------------------------------------------


async def test_the_ten_curl_examples_run_as_documented(gateway: Running, tmp_path: Path) -> None:
    blocks = code_blocks(ROOT / "docs" / "curl-examples.md", "bash")
    assert len(blocks) == 10
    env = child_env(tmp_path)
    job_id: str | None = None

    async def run(n: int) -> tuple[int, str]:
        script = blocks[n - 1].replace(DOC_URL, gateway.url).replace("<API_KEY>", gateway.key)
        if "<JOB_ID>" in script:
            assert job_id is not None, "example 4 needs the job made by example 3"
            script = script.replace("<JOB_ID>", job_id)
        assert "<API_KEY>" not in script and "<JOB_ID>" not in script
        return await run_curl(script, env)

    def ok_json(status: int, body: str, expected: int = 200) -> Json:
        assert status == expected, body
        parsed: Json = json.loads(body)
        return parsed

    # 1) basic unified response, input.messages with typed parts
    check_response(ok_json(*await run(1)), "Hello")

    # 2) streamed unified response
    status, body = await run(2)
    assert status == 200, body
    check_stream(body, "Stream please")

    # 3) a job: 202 at once, queued (or already picked up by a worker)
    job = ok_json(*await run(3), expected=202)
    assert job["object"] == "job" and job["id"].startswith("job_")
    assert job["status"] in ("queued", "running", "succeeded")
    assert job["request"] == {"model": "gpt-4.1", "input": {"prompt": "Run async"}}
    job_id = job["id"]

    # 4) the job's status, polled with the documented command until a worker finishes it
    with trio.fail_after(20):
        while True:
            got = ok_json(*await run(4))
            assert got["id"] == job_id
            if got["status"] == "succeeded":
                break
            assert got["status"] in ("queued", "running"), got
            await trio.sleep(0.1)
    check_response(got["result"], "Run async")
    assert got["completed_at"] is not None and Decimal(got["cost_usd"]) > 0

    # 5) models
    models = ok_json(*await run(5))
    assert models["object"] == "list"
    by_id = {m["id"]: m for m in models["data"]}
    assert {"gpt-4.1", "claude-3.5-sonnet"} <= set(by_id)
    deployment = by_id["gpt-4.1"]["gateway"]["deployments"][0]
    assert deployment["provider"] == "openai" and Decimal(deployment["pricing"]["output"]) > 0

    # 6) usage over 2024: the totals count exactly the ledger rows inside that window
    usage = ok_json(*await run(6))
    assert usage["object"] == "usage"
    assert (usage["from"], usage["to"]) == ("2024-01-01T00:00:00Z", "2024-12-31T23:59:59Z")
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC)
    rows = await gateway.services.storage.usage_rows("t1", start, end)
    assert usage["totals"]["requests"] == len(rows)
    assert Decimal(usage["totals"]["cost_usd"]) == sum((r.cost for r in rows), Decimal(0))

    # 7) chat completions on the original path
    check_chat(ok_json(*await run(7)), "Hi")

    # 8) routing strategy cost
    assert check_response(ok_json(*await run(8)), "Cheapest")["routing"] == "cost"

    # 9) reliability, Anthropic only
    routed = check_response(ok_json(*await run(9)), "Only anthropic", model="claude-3.5-sonnet")
    assert routed["routing"] == "reliability" and routed["provider"] == "anthropic"
    assert {a["provider"] for a in routed["attempts"]} == {"anthropic"}

    # 10) a per-request budget: answered, and within it
    capped = check_response(ok_json(*await run(10)), "Budget")
    assert Decimal(capped["cost_usd"]) <= Decimal("0.01")

    # the seven model calls above (1, 2, the job, 7-10) each wrote one priced ledger row
    async with gateway.client() as client:
        now = (await client.get("/v1/usage")).json()
    assert now["totals"]["requests"] == 7 and Decimal(now["totals"]["cost_usd"]) > 0


# -- README.md ------------------------------------------------------------------------------


def check_unified(body: Json) -> None:
    gateway = check_response(body, "What can you do?", model="claude-3.5-sonnet")
    assert gateway["routing"] == "cost"


async def test_readme_curl_examples(gateway: Running, tmp_path: Path) -> None:
    blocks = [b for b in code_blocks(ROOT / "README.md", "bash") if b.lstrip().startswith("curl ")]
    assert len(blocks) == 3
    env = child_env(tmp_path, UMG_API_KEY=gateway.key)
    checks: dict[str, Callable[[str], None]] = {
        "/v1/responses/stream ": lambda body: check_stream(body, "Say hello to the gateway"),
        "/v1/responses ": lambda body: check_unified(json.loads(body)),
        "/v1/chat/completions ": lambda body: check_chat(json.loads(body), "Hi there"),
    }
    seen = set()
    for block in blocks:
        assert "$UMG_API_KEY" in block
        status, body = await run_curl(block.replace(DOC_URL, gateway.url), env)
        assert status == 200, body
        path = next(p for p in checks if p in block)
        checks[path](body)
        seen.add(path)
    assert seen == set(checks)


async def test_readme_python_examples(gateway: Running, tmp_path: Path) -> None:
    blocks = code_blocks(ROOT / "README.md", "python")
    assert len(blocks) == 3
    env = child_env(tmp_path, UMG_API_KEY=gateway.key)
    sdks = set()
    for block in blocks:
        assert DOC_URL in block and 'os.environ["UMG_API_KEY"]' in block
        asked = re.search(r'"content": "([^"]+)"', block)
        assert asked is not None
        done = await trio.run_process(
            [sys.executable, "-c", block.replace(DOC_URL, gateway.url)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )
        assert done.returncode == 0, done.stderr.decode()
        printed = done.stdout.decode()
        # The Mock answers "Mock answer from <upstream model>: <the user's words>"
        assert printed.startswith("Mock answer from "), printed
        assert asked.group(1) in printed
        sdks.add(("anthropic" if "Anthropic(" in block else "openai", "stream=True" in block))
    assert sdks == {("openai", False), ("openai", True), ("anthropic", False)}
    # each SDK call went through the real pipeline and was billed
    assert await gateway.services.storage.usage_count() == 3


# -- docs/api.md ----------------------------------------------------------------------------


async def test_every_route_is_in_api_md(gateway: Running) -> None:
    doc = (ROOT / "docs" / "api.md").read_text()
    app = create_app(gateway.services)
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":  # Quart's built-in static files route; no API
            continue
        # `/v1/jobs/<job_id>` is written `/v1/jobs/{id}` (any name) in the doc
        pattern = "".join(
            r"\{[a-z_]+\}" if part.startswith("<") else re.escape(part)
            for part in re.split(r"(<[^>]+>)", rule.rule)
        )
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found = re.search(rf"`{method} {pattern}`", doc)
            assert found, f"docs/api.md does not document `{method} {rule.rule}`"
            checked += 1
    assert checked >= 18


# -- every `umg` and `make` command the docs show ------------------------------------------

DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:\.venv/bin/)?(?:umg|make)(?:\s|$)")
# Mentions of a command's name in prose, not commands to type.
NAMES = {"umg", "umg keys", "umg keys create", "umg keys list", "umg --config FILE", "umg budgets",
         "umg budgets set"}
# Placeholders in synopses and examples -> values that run here.
PLACEHOLDERS = {
    "FILE": "umg.toml", "URL": "sqlite:///data/other.db", "HOST": "127.0.0.1", "T": "dev",
    "P": "dev", "NAME": "docs", "X": "5", "N": "1", "ID_OR_PREFIX": "<KEY_ID>",
    "postgresql://...": "sqlite:///data/pg-stand-in.db", "sqlite:///other.db": "sqlite:///data/other.db",
}  # fmt: skip


def doc_commands() -> list[tuple[str, str]]:
    """(file, command) for every umg / make command in inline code or a shell-ish block."""
    found: list[tuple[str, str]] = []
    for path in DOC_FILES:
        text = path.read_text()
        blocks = list(re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M))
        for block in blocks:
            if block.group(1) in ("", "bash", "text", "sh"):
                joined = block.group(2).replace("\\\n", " ")
                found += [(path.name, line) for line in joined.splitlines()]
        prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
        found += [(path.name, span) for span in re.findall(r"`([^`]+)`", prose)]
    commands: dict[str, str] = {}
    for name, raw in found:
        command = " ".join(raw.split("  #")[0].split())  # one line, no trailing comment
        if COMMAND.match(command) and command not in NAMES:
            commands.setdefault(command, name)
    return [(name, command) for command, name in commands.items()]


def concrete(command: str, port: int) -> tuple[dict[str, str], list[str]]:
    """The command with its placeholders filled in: (environment, argv)."""
    words = command.replace("[", " ").replace("]", " ").replace("<key id or prefix>", "<KEY_ID>")
    argv: list[str] = []
    env: dict[str, str] = {}
    for word in shlex.split(words):
        word = word.split("|")[0]  # day|month|total -> day
        if re.fullmatch(r"[A-Z_]+=\S+", word) and not argv[1:] or (argv[:1] == ["make"] and "=" in word):
            key, _, value = word.partition("=")
            value = str(port) if key == "PORT" else PLACEHOLDERS.get(value, value)
            if argv[:1] == ["make"]:
                argv.append(f"{key}={value}")
            else:
                env[key] = value
            continue
        word = PLACEHOLDERS.get(word, word)
        if argv and argv[-1] == "--port":
            word = str(port)
        argv.append(word)
    if argv[0] == ".venv/bin/umg":
        argv[0] = "umg"
    return env, argv


async def test_every_command_in_the_docs_runs(tmp_path: Path) -> None:
    from tests.server.test_process import (
        START_TIMEOUT,
        UMG,
        clean_env,
        make_env,
        on_free_ports,
        umg_serve,
    )

    (tmp_path / "umg.toml").write_text('[server]\nlog_level = "info"\n')
    base_env = {"DATABASE_URL": f"sqlite:///{tmp_path}/data/gateway.db"}

    async def umg(args: list[str], env: dict[str, str]) -> Any:
        return await trio.run_process(
            [UMG, *args], env=clean_env(**base_env, **env), cwd=tmp_path,
            capture_stdout=True, capture_stderr=True, check=False,
        )

    async def serve(where: str, command: str, ports: list[int], attempt: int) -> None:
        env, argv = concrete(command, ports[0])
        async with umg_serve(*argv[1:], env={**base_env, "PORT": str(ports[0]), **env},
                             cwd=tmp_path) as server:
            url = await server.started()
            assert url.endswith(f":{ports[0]}"), f"{where}: `{command}` listened on {url}"
            await server.stopped()

    ran: dict[str, int] = {"umg": 0, "serve": 0, "make": 0}
    for where, command in doc_commands():
        env, argv = concrete(command, 3000)  # never bound: a serving command gets its port below
        if argv[0] == "make":
            done = subprocess_run(["make", "--no-print-directory", "-n", *argv[1:]], make_env())
            assert done.returncode == 0, f"{where}: `{command}`: {done.stderr}"
            ran["make"] += 1
            continue
        if "serve" in argv:  # on a port that was free; another if it is taken meanwhile
            await on_free_ports(1, partial(serve, where, command))
            ran["serve"] += 1
            continue
        if "worker" in argv:  # runs until SIGTERM, like serve, but listens nowhere
            async with umg_serve(*argv[1:], env={**base_env, **env}, cwd=tmp_path) as server:
                with trio.fail_after(START_TIMEOUT):  # a bound on its start, not a speed check
                    while "Worker running" not in server.stdout:
                        assert server.proc.returncode is None, f"{where}: `{command}`: {server.stderr}"
                        await trio.sleep(0.02)
                await server.stopped()
            ran["umg"] += 1
            continue
        if "<KEY_ID>" in argv:  # a key to revoke, in the database the command names
            before_keys = argv[1 : argv.index("keys")]
            created = await umg([*before_keys, "keys", "create", "--tenant", "d", "--project",
                                 "d", "--json"], env)
            key_id = json.loads(created.stdout)["id"]
            argv = [key_id if a == "<KEY_ID>" else a for a in argv]
        done = await umg(argv[1:], env)
        assert done.returncode == 0, f"{where}: `{command}` -> {done.returncode}: {done.stderr!r}"
        ran["umg"] += 1
    assert ran["umg"] >= 8 and ran["serve"] >= 5 and ran["make"] >= 4, ran


def subprocess_run(argv: list[str], env: dict[str, str]) -> Any:
    import subprocess

    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
