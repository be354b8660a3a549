"""`python -m bench.storage`: what storage costs one request, and how many ledger rows/s.

Owns: a micro-benchmark of the storage calls one model request makes, through the
`Storage` interface only (no HTTP, no provider): the key lookup, the rpm and tpm bucket
takes, the budget reservation and its settlement, the ledger row and the token-bucket
correction, applied with the core's own rules (`core.ratelimit`, `core.budget`) so the
states have their real size. Many tasks run those sequences at once (`--concurrency`),
all on one key, like one busy client; a second run writes ledger rows only, and a third
admits through `adapters.limits.Limits` (rpm and tpm take, then the token correction),
which on Postgres serves from leased slices (`adapters/leases.py`).

It prints, per concurrency: requests/s, wall time per request (mean and p99 of one
request's storage calls) and process CPU per request (all threads). Options:
`--requests N`, `--concurrency 1,16,64`, `--database-url URL` (default a temp SQLite).
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import trio

from adapters import keys
from adapters.clock import Clock
from adapters.limits import Limits
from adapters.storage import open_storage
from adapters.storage.base import Storage
from adapters.storage.records import KeyRecord, UsageRecord
from core import budget, ratelimit

RPM = ratelimit.BucketSpec.per_minute(10**9)
TPM = ratelimit.BucketSpec.per_minute(10**12)
LIMIT = Decimal("1000000")


def _key() -> tuple[str, KeyRecord]:
    plain, prefix, digest = keys.mint()
    record = KeyRecord(
        id=f"key_{secrets.token_hex(6)}", prefix=prefix, secret_hash=digest, tenant="bench",
        project="bench", name=None, rpm=10**9, tpm=10**12, budget_usd=LIMIT,
        budget_period="total", created_at=datetime.now(UTC), revoked_at=None,
    )  # fmt: skip
    return plain, record


def _row(key: KeyRecord, rid: str) -> UsageRecord:
    return UsageRecord(
        id=f"use_{rid}", request_id=rid, at=datetime.now(UTC), tenant=key.tenant,
        project=key.project, key_id=key.id, endpoint="chat.completions", model="gpt-4.1",
        provider="openai", deployment="openai/gpt-4.1", input_tokens=500, output_tokens=100,
        cached_input_tokens=0, cache_write_tokens=0, reasoning_tokens=0,
        cost=Decimal("0.0018"), price_version="2026-01", status="ok", error_code=None,
        latency_ms=12, ttft_ms=None, attempts=1, stream=False,
    )  # fmt: skip


def _take(spec: ratelimit.BucketSpec, amount: float, now: float) -> Any:
    def apply(state: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        decision, new = ratelimit.take(spec, ratelimit.Bucket.from_dict(state) if state else None, amount, now)
        return decision, new.to_dict()

    return apply


def _adjust(spec: ratelimit.BucketSpec, delta: float, now: float) -> Any:
    def apply(state: dict[str, Any] | None) -> tuple[None, dict[str, Any]]:
        bucket = ratelimit.Bucket.from_dict(state) if state else None
        return None, ratelimit.adjust(spec, bucket, delta, now).to_dict()

    return apply


def _reserve(rid: str, amount: Decimal) -> Any:
    def apply(state: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        current = budget.BudgetState.from_dict(state) if state else budget.BudgetState(limit=LIMIT)
        decision, new = budget.reserve(current, rid, amount)
        return decision, new.to_dict()

    return apply


def _settle(rid: str, actual: Decimal) -> Any:
    def apply(state: dict[str, Any] | None) -> tuple[None, dict[str, Any]]:
        assert state is not None
        _, new = budget.settle(budget.BudgetState.from_dict(state), rid, actual)
        return None, new.to_dict()

    return apply


async def one_request(storage: Storage, plain: str, key: KeyRecord) -> None:
    """The storage calls of one request with rpm, tpm and a key budget."""
    prefix = keys.prefix_of(plain)
    assert prefix is not None
    found = await storage.key_by_prefix(prefix)
    assert found is not None and keys.matches(plain, found.secret_hash)
    now = time.time()
    rid = f"req_{secrets.token_hex(12)}"
    await storage.update_state(f"rl:req:{key.id}", _take(RPM, 1.0, now))
    await storage.update_state(f"rl:tok:{key.id}", _take(TPM, 600.0, now))
    scope = f"key:{key.id}:total"
    await storage.update_state(scope, _reserve(f"{rid}:1", Decimal("0.01")))
    await storage.update_state(scope, _settle(f"{rid}:1", Decimal("0.0018")))
    assert await storage.insert_usage(_row(key, rid))
    await storage.update_state(f"rl:tok:{key.id}", _adjust(TPM, -10.0, now))


async def one_row(storage: Storage, plain: str, key: KeyRecord) -> None:
    del plain
    assert await storage.insert_usage(_row(key, f"req_{secrets.token_hex(12)}"))


async def one_admission(limits: Limits, key: KeyRecord) -> None:
    """What `Limits` costs one request with rpm and tpm: the take and the correction."""
    await limits.take_rate(key, 600)
    await limits.adjust_tokens(key, -10)


async def _drive(
    work: Callable[[], Awaitable[None]], requests: int, concurrency: int
) -> tuple[float, float, list[float]]:
    """Run `requests` calls of `work` on `concurrency` tasks: (wall s, CPU s, latencies)."""
    latencies: list[float] = []
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            start = time.perf_counter()
            await work()
            latencies.append(time.perf_counter() - start)

    cpu, wall = time.process_time(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return time.perf_counter() - wall, time.process_time() - cpu, latencies


def _report(name: str, concurrency: int, n: int, wall: float, cpu: float, lat: list[float]) -> None:
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(
        f"{name:<8} c={concurrency:<3} {n / wall:8.0f} /s   wall/req mean"
        f" {statistics.fmean(lat) * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms"
        f"   CPU/req {cpu / n * 1000:6.3f} ms"
    )


async def main(url: str | None, requests: int, levels: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(url or f"sqlite:///{tmp}/bench.db")
        await storage.migrate()
        plain, key = _key()
        await storage.insert_key(key)
        try:
            await _drive(lambda: one_request(storage, plain, key), 50, 4)  # warm up
            for kind, work in (("request", one_request), ("ledger", one_row)):
                for c in levels:
                    wall, cpu, lat = await _drive(lambda w=work: w(storage, plain, key), requests, c)  # type: ignore[misc]
                    _report(kind, c, requests, wall, cpu, lat)
            limits = Limits(storage, Clock())
            for c in levels:
                wall, cpu, lat = await _drive(lambda: one_admission(limits, key), requests, c)
                _report("admit", c, requests, wall, cpu, lat)
        finally:
            await storage.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    trio.run(main, args.database_url, args.requests, [int(c) for c in args.concurrency.split(",")])
