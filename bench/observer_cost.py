"""What the observer hook (adapters/observe.py) costs a request, measured in process.

Runs the request driver directly (no HTTP: the driver's own cost is what the hook adds
to), against the Mock provider and a fresh SQLite ledger, one request after another:
`--requests` whole answers and as many streamed ones (16 chunks each) per round, for
each mode in turn, `--rounds` times (interleaved, so a noisy machine hurts every mode
alike). Prints the median microseconds per request of each mode and its ratio to `none`.

Modes: `none` (no observer: what every deployment without telemetry runs), `noop` (an
observer whose watch does nothing: the cost of building the records), and `telemetry`
(the request log and the metrics as `serve` attaches them, the log lines formatted and
written to the null device). Run it on another checkout with `--modes none` to compare the driver without
the hook: `python -m bench.observer_cost --modes none`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import trio

from adapters.admin import create_key
from adapters.clock import Clock
from adapters.driver import Ingress, new_id
from adapters.gateway import Gateway
from adapters.providers.mock import MockProvider
from adapters.storage import open_storage
from core.model import GatewayRequest, Message, TextPart


def observer_for(mode: str) -> Any:
    """The observer of `mode` (None for `none`); imported lazily so `none` runs anywhere."""
    if mode == "none":
        return None
    if mode == "noop":
        from adapters.observe import Observer, RunWatch

        class Noop(Observer):
            def run_opened(self, event: Any) -> RunWatch:
                return RunWatch()

        return Noop()
    if mode == "telemetry":
        import logging
        import os

        from adapters.config.settings import Settings
        from adapters.telemetry import JsonFormatter
        from server.services import observers

        sink = logging.StreamHandler(open(os.devnull, "w"))  # open for the whole run
        sink.setFormatter(JsonFormatter())
        logging.getLogger("umg").addHandler(sink)
        logging.getLogger("umg").setLevel(logging.INFO)
        logging.getLogger("umg").propagate = False
        observer, _ = observers(Settings(), _catalog())
        return observer
    raise SystemExit(f"unknown mode {mode!r}")


async def measure(modes: list[str], requests: int, rounds: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(f"sqlite:///{tmp}/bench.db", owner=True)
        await storage.migrate()
        clock = Clock()
        mock = MockProvider()
        gateways = {}
        for mode in modes:
            observer = observer_for(mode)
            extra = {} if observer is None else {"observer": observer}
            gateways[mode] = Gateway(
                storage=storage, catalog=_catalog(), providers={"mock": mock}, clock=clock, **extra
            )
        key, _ = await create_key(storage, clock, tenant="bench", project="p")
        whole = GatewayRequest(model="mock-fast", messages=(Message("user", (TextPart("hello there"),)),))
        streamed = GatewayRequest(
            model="mock-fast", messages=(Message("user", (TextPart("hello there"),)),), stream=True,
            metadata={"mock_scenario": "output_tokens=16"},
        )
        results: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(rounds):
            for mode in modes:
                started = time.perf_counter()
                for _ in range(requests):
                    await _one(gateways[mode], key, whole)
                    await _one(gateways[mode], key, streamed)
                elapsed = time.perf_counter() - started
                results[mode].append(elapsed / (2 * requests) * 1e6)
        await storage.close()
    return results


def _catalog() -> Any:
    from adapters.config.settings import Settings

    return Settings().catalog()


async def _one(gateway: Gateway, key: str, request: GatewayRequest) -> None:
    async def parse() -> GatewayRequest:
        return request

    run = gateway.driver.run(Ingress(request_id=new_id("req"), endpoint="responses", parse=parse, token=key))
    await run.open()
    if request.stream:
        async def emit(event: object) -> None:
            return None

        await run.drive(emit)
    else:
        await run.collect()


def report(results: dict[str, list[float]], out: Callable[[str], None] = print) -> None:
    base = statistics.median(results["none"]) if "none" in results else None
    for mode, samples in results.items():
        median = statistics.median(samples)
        ratio = f"  x{median / base:.3f} of none" if base else ""
        out(f"{mode:10s} median {median:8.1f} us/request over {len(samples)} rounds{ratio}")


def alone(count: int = 20000, rounds: int = 5) -> None:
    """The two shipped observers called directly for one finished request (`--alone`):
    CPU microseconds per request (process time, so other work on the machine counts
    less) for the request log (formatted, written to the null device) and for the
    metrics, the median of `rounds` rounds."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from adapters.metrics import Metrics
    from adapters.observe import AttemptEnded, RunFinished, RunOpened
    from adapters.request_log import RequestLog
    from adapters.storage.records import UsageRecord

    observer_for("telemetry")  # the log's handler
    opened = RunOpened("req_1", "req_1", "responses", "abc", "key_1", "t1", "p1", "mock-fast",
                       False, "cost", {}, 1.0)
    row = UsageRecord(
        id="use_1", request_id="req_1", at=datetime.now(UTC), tenant="t1", project="p1", key_id="k",
        endpoint="responses", model="mock-fast", provider="mock", deployment="mock/mock-fast",
        input_tokens=10, output_tokens=5, cached_input_tokens=0, cache_write_tokens=0,
        reasoning_tokens=0, cost=Decimal("0.0001"), price_version="v", status="ok", error_code=None,
        latency_ms=3, ttft_ms=None, attempts=1, stream=False,
    )
    ended = AttemptEnded(1, "mock/mock-fast", "mock", True, None, None, "answered", 2.0)
    finished = RunFinished(row, "cost", "stop", None, None, 1.2, 0.001, 2.0, attempts=(ended,))
    shipped = (("request log", RequestLog()), ("metrics", Metrics(_catalog().models)))
    samples: dict[str, list[float]] = {name: [] for name, _ in shipped}
    for _ in range(rounds):
        for name, observer in shipped:
            started = time.process_time()
            for _ in range(count):
                watch = observer.run_opened(opened)
                watch.attempt_ended(ended)
                watch.run_finished(finished)
            samples[name].append((time.process_time() - started) / count * 1e6)
    for name, values in samples.items():
        print(f"{name:12s} {statistics.median(values):6.1f} us CPU/request (median of {rounds} rounds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="none,noop,telemetry")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--alone", action="store_true", help="time the shipped observers alone")
    args = parser.parse_args()
    if args.alone:
        alone()
        return
    results = trio.run(measure, args.modes.split(","), args.requests, args.rounds)
    report(results)


if __name__ == "__main__":
    main()
