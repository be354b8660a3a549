"""`make bench`: what the gateway adds on top of a provider call, measured side by side.

Starts a fast local upstream (the fake provider, own process) and two gateways (own
processes, SQLite ledger): one in live mode proxying to that upstream through the OpenAI
adapter, one in mock mode. A raw h11 client then sends the same chat request directly to
the upstream and through each gateway, alternating rounds so that noise on this shared
machine hits every target alike. It prints medians, p99s, throughput, the gateway's
overhead (median through the gateway minus median direct) and each gateway's resident
memory. Options: `--requests N`, `--rounds R`, `--concurrency 1,16`.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio
from attrs import define

from bench.loadgen import Timings, run_load

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
KEY_PATTERN = re.compile(r"Created a development API key.*?(umg_live_\S+)")


@define
class Target:
    name: str
    url: str
    headers: dict[str, str]
    pid: int | None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_key(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early: {path.read_text()}")
        found = KEY_PATTERN.search(path.read_text())
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise TimeoutError(f"no development key printed in {path}")


@contextmanager
def _process(args: list[str], env: dict[str, str], out: Path) -> Iterator[subprocess.Popen[bytes]]:
    with out.open("wb") as sink:
        proc = subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _gateway_env(tmp: Path, name: str, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env.update({"DATABASE_URL": f"sqlite:///{tmp}/{name}.db", "LOG_LEVEL": "warning", **extra})
    return env


def _rss_mib(pid: int | None) -> str:
    if pid is None:
        return "-"
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return f"{int(line.split()[1]) / 1024:.0f}"
    return "?"


def _summary(name: str, conc: int, runs: list[Timings], streaming: bool) -> dict[str, float | str]:
    totals = [t for r in runs for t in r.total]
    firsts = [t for r in runs for t in r.first_byte]
    rate = statistics.median(len(r.total) / r.elapsed for r in runs)
    q = statistics.quantiles(totals, n=100)
    return {
        "target": name,
        "c": conc,
        "median_ms": statistics.median(totals) * 1000,
        "p99_ms": q[98] * 1000,
        "first_byte_ms": statistics.median(firsts) * 1000 if streaming else float("nan"),
        "req_s": rate,
        "errors": sum(r.errors for r in runs),
    }


def _payload(model: str, stream: bool) -> dict[str, object]:
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello to the benchmark in a few words"}],
        "max_tokens": 32,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


async def _measure(targets: list[Target], models: dict[str, str], args: argparse.Namespace) -> None:
    rows: list[dict[str, float | str]] = []
    for streaming in (False, True):
        for conc in args.concurrency:
            results: dict[str, list[Timings]] = {t.name: [] for t in targets}
            for t in targets:  # warm-up: connections, caches, the ledger's first writes
                await run_load(t.url, _payload(models[t.name], streaming), t.headers,
                               requests=max(20, conc * 2), concurrency=conc)
            for _ in range(args.rounds):
                for t in targets:
                    results[t.name].append(await run_load(
                        t.url, _payload(models[t.name], streaming), t.headers,
                        requests=args.requests, concurrency=conc,
                    ))
            for t in targets:
                rows.append({"mode": "stream" if streaming else "json",
                             **_summary(t.name, conc, results[t.name], streaming)})
    _print(rows, targets)


def _print(rows: list[dict[str, float | str]], targets: list[Target]) -> None:
    print("\n| mode | target | c | median ms | p99 ms | first byte ms | req/s | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        fb = "-" if r["first_byte_ms"] != r["first_byte_ms"] else f"{r['first_byte_ms']:.2f}"
        print(f"| {r['mode']} | {r['target']} | {r['c']} | {r['median_ms']:.2f} | {r['p99_ms']:.2f} "
              f"| {fb} | {r['req_s']:.0f} | {r['errors']} |")
    print("\nOverhead of the live gateway (median through it minus median direct):")
    by = {(r["mode"], r["target"], r["c"]): r for r in rows}
    for (mode, target, conc), r in by.items():
        if target != "gateway-live":
            continue
        direct = by[(mode, "direct", conc)]
        extra = float(r["median_ms"]) - float(direct["median_ms"])
        ratio = float(r["median_ms"]) / float(direct["median_ms"])
        print(f"- {mode}, c={conc}: +{extra:.2f} ms per request ({ratio:.1f}x direct); "
              f"throughput {float(r['req_s']) / float(direct['req_s']):.2f}x direct")
    print("\nResident memory after the run (MiB): "
          + ", ".join(f"{t.name} {_rss_mib(t.pid)}" for t in targets if t.pid is not None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per round and target")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with _process([PYTHON, "-m", "bench.upstream"], dict(os.environ), tmp / "up.out") as up:
            deadline = time.monotonic() + 20
            while not (tmp / "up.out").read_text().strip() and time.monotonic() < deadline:
                time.sleep(0.05)
            upstream = (tmp / "up.out").read_text().split()[0]
            live_port, mock_port = _free_port(), _free_port()
            umg = str(Path(PYTHON).parent / "umg")
            live_env = _gateway_env(tmp, "live", {
                "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": upstream + "/v1",
            })
            mock_env = _gateway_env(tmp, "mock", {"MOCK_MODE": "true"})
            with _process([umg, "serve", "--port", str(live_port)], live_env, tmp / "live.out") as live, \
                 _process([umg, "serve", "--port", str(mock_port)], mock_env, tmp / "mock.out") as mock:
                live_key = _wait_for_key(tmp / "live.out", live)
                mock_key = _wait_for_key(tmp / "mock.out", mock)
                targets = [
                    Target("direct", upstream + "/v1/chat/completions", {"authorization": "Bearer sk-bench"}, up.pid),
                    Target("gateway-live", f"http://127.0.0.1:{live_port}/v1/chat/completions",
                           {"authorization": f"Bearer {live_key}"}, live.pid),
                    Target("gateway-mock", f"http://127.0.0.1:{mock_port}/v1/chat/completions",
                           {"authorization": f"Bearer {mock_key}"}, mock.pid),
                ]
                models = {"direct": "gpt-4o-mini", "gateway-live": "gpt-4o-mini", "gateway-mock": "mock-fast"}
                print(f"bench: {args.rounds} rounds x {args.requests} requests per target, "
                      f"concurrency {args.concurrency}, python {sys.version.split()[0]}, "
                      f"{os.cpu_count()} cpus")
                trio.run(_measure, targets, models, args)


if __name__ == "__main__":
    main()
