"""What tracing costs the whole request path, measured in process (no network, no wrk).

A real app (`create_app`, SQLite in memory, Mock provider, request log and metrics off)
per setup, each answering `--requests` chat completions through Quart's test client per
round; rounds alternate the setups' order (ABBA) and the figure is CPU microseconds per
request (this process, all threads) and, per round, the ratio to the first setup, whose
median is printed. Setups: `off` (no observer), `noop` (an observer whose run watch does
nothing: the driver's hook and its records), `traced-bare` (tracing with no span
processor: the records and their spans, built and handed to nobody), `traced` (tracing
as the gateway sets it up, `TrioBatch` in front of an OTLP exporter to a port nobody
listens on, as `bench/run.py`'s `ours-traced`), `traced-sdk` (the same with the SDK's
`BatchSpanProcessor` instead: what the gateway used before). A setup ending in
`+metrics` (`off+metrics`, `traced+metrics`) has the metrics on too: `traced+metrics`
beside `off` is issue 10's bar (tracing and metrics on against both off) in process.

    python -m bench.tracing_stack [--requests 200] [--rounds 30] [--setups noop,traced-bare,traced,traced-sdk,off]

Each setup's line also gives the garbage collector's share: CPU microseconds per request
spent in collections (timed with `gc.callbacks`) and how many collections of each
generation ran per 1,000 requests.

Where `bench/tracing_cost.py` times the tracing observer alone, this shows what it adds
to a request as served, which was more (docs/observability.md, "Cost").
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import statistics
import time
from typing import Any

import trio
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from adapters.admin import create_key
from adapters.config.loader import load_settings
from adapters.config.tracing import TracingSettings
from adapters.observe import Observer, RunOpened, RunWatch
from adapters.trace_batch import TrioBatch
from adapters.tracing import Tracing, exporters
from server.app import create_app
from server.services import attach_tracing, build_services

BODY = {"model": "mock-fast", "messages": [{"role": "user", "content": "hello"}]}


class Noop(Observer):
    def run_opened(self, event: RunOpened) -> RunWatch:
        return RunWatch()


class Collections:
    """`gc.callbacks`: CPU seconds in collections and their count per generation, per setup."""

    def __init__(self) -> None:
        self.setup: str | None = None
        self.seconds: dict[str, float] = {}
        self.counts: dict[tuple[str, int], int] = {}
        self._began = 0.0

    def seen(self, phase: str, info: dict[str, int]) -> None:
        if self.setup is None:
            return
        if phase == "start":
            self._began = time.process_time()
            return
        self.seconds[self.setup] = self.seconds.get(self.setup, 0.0) + time.process_time() - self._began
        key = (self.setup, info["generation"])
        self.counts[key] = self.counts.get(key, 0) + 1


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def client(setup: str) -> tuple[Any, str]:
    metrics = setup.endswith("+metrics")
    setup = setup.removesuffix("+metrics")
    env = {"UMG_REQUEST_LOG": "false", "UMG_METRICS": "true" if metrics else "false"}
    services = await build_services(load_settings(env, database_url="sqlite:///:memory:"))
    if setup == "noop":
        services.gateway.driver.observer = Noop()
    elif setup.startswith("traced"):
        processors: list[SpanProcessor] = []
        if setup != "traced-bare":
            url = f"http://127.0.0.1:{unused_port()}/v1/traces"
            found = exporters(TracingSettings(("otlp",), url))
            if setup == "traced-sdk":
                processors = [BatchSpanProcessor(e) for e in found]
            else:
                processors = [TrioBatch(e) for e in found]  # as Tracing.from_settings
        attach_tracing(services, Tracing(processors))
    key, _ = await create_key(services.storage, services.clock, tenant="bench", project="bench")
    test_app = create_app(services).test_app()
    await test_app.__aenter__()  # left open: the process ends after the figures
    return test_app.test_client(), key


async def measure(args: argparse.Namespace) -> None:
    setups = tuple(args.setups.split(","))
    clients = {s: await client(s) for s in setups}
    samples: dict[str, list[float]] = {s: [] for s in setups}
    collector = Collections()
    gc.callbacks.append(collector.seen)
    for n in range(args.rounds):
        for setup in setups if n % 2 == 0 else setups[::-1]:
            test_client, key = clients[setup]
            collector.setup = setup
            started = time.process_time()
            for _ in range(args.requests):
                answer = await test_client.post(
                    "/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"}
                )
                assert answer.status_code == 200, answer.status_code
            samples[setup].append((time.process_time() - started) / args.requests * 1e6)
            collector.setup = None
    first = setups[0]
    total = args.rounds * args.requests
    for setup in setups:
        ratios = [a / b for a, b in zip(samples[setup], samples[first], strict=True)]
        counts = "/".join(f"{collector.counts.get((setup, g), 0) * 1000 / total:.1f}" for g in range(3))
        print(f"{setup:12s} median {statistics.median(samples[setup]):6.0f} us CPU/request, "
              f"per round against {first}: median {statistics.median(ratios):.3f}; "
              f"gc {collector.seconds.get(setup, 0.0) / total * 1e6:5.1f} us/request, "
              f"collections per 1000 requests (gen 0/1/2) {counts}", flush=True)
    os._exit(0)  # the apps' test servers are left open (their nurseries): nothing to flush


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--setups", default="noop,traced-bare,traced,traced-sdk,off")
    trio.run(measure, parser.parse_args())


if __name__ == "__main__":
    main()
