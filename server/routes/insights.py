"""What any key may read about its own traffic: `GET /v1/me`, `GET /v1/requests` and
`GET /v1/usage/series` (the console's Usage and Requests pages).

Owns: these three reads and the shapes of their answers. A tenant key sees its own
tenant only (`server/ledger_params.py` pins the filter); an admin key sees every
tenant, or the one named by `tenant`. `/v1/admin/requests` answers with
`requests_page` too, behind the admin check.

`/v1/usage/series` sums rows per hour or day in the database (never row by row in
Python), optionally grouped by one column, and gives latency and time-to-first-token
percentiles from histograms (`core.percentiles`: each estimate lies in the bin of the
true value, bins 1.4x to 2x wide).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from quart import request
from quart_trio import QuartTrio

from adapters.admin import key_view, spend_view, usage_view
from adapters.storage.ledger import GROUP_COLUMNS, Bucket, Histogram, LedgerFilter, SeriesRow
from adapters.storage.records import KeyRecord
from core import percentiles
from core.billing import format_usd
from core.errors import InvalidRequest
from server import ledger_params as params
from server.auth import require_key
from server.services import Services

MAX_HOURLY_WINDOW = timedelta(days=31)
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99))


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def requests_page(services: Services, caller: KeyRecord) -> dict[str, Any]:
    args = request.args
    params.check_params(args, (*params.REQUEST_PARAMS, "limit", "after"))
    f = params.ledger_filter(args, caller, services.clock.wall())
    size = params.limit(args)
    after = args.get("after") or None
    rows = await services.storage.ledger_page(f, size + 1, after)
    more = len(rows) > size
    rows = rows[:size]
    return {
        "object": "list",
        "data": [usage_view(r) for r in rows],
        "has_more": more,
        "next_after": rows[-1].id if more and rows else None,
    }


def _bucket_start(bucket: str) -> str:
    """`2026-01-02T03` -> `2026-01-02T03:00:00Z`; `2026-01-02` -> `2026-01-02T00:00:00Z`."""
    return f"{bucket}:00:00Z" if "T" in bucket else f"{bucket}T00:00:00Z"


_QS = tuple(q for _, q in QUANTILES)


def _percentiles(counts: list[int]) -> dict[str, float | None]:
    values = percentiles.quantiles(counts, _QS)
    out: dict[str, float | None] = {
        name: None if value is None else round(value, 1)
        for (name, _), value in zip(QUANTILES, values, strict=True)
    }
    out["count"] = sum(counts)
    return out


def _latency_series(hist: Histogram) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each bucket's percentiles (in bucket order), and the whole window's."""
    series = [{"at": _bucket_start(b), **_percentiles(counts)} for b, counts in hist.items()]
    whole = [sum(column) for column in zip(*hist.values(), strict=True)] if hist else []
    return series, _percentiles(whole)


def series_answer(
    f: LedgerFilter, bucket: Bucket, by: str | None, rows: list[SeriesRow],
    latency_hist: Histogram, ttft_hist: Histogram,
) -> dict[str, Any]:  # fmt: skip
    """`/v1/usage/series`' answer from the three reads (`make bench-console` times it too)."""
    latency, latency_all = _latency_series(latency_hist)
    ttft, ttft_all = _latency_series(ttft_hist)
    totals = {
        "requests": sum(r.requests for r in rows),
        "errors": sum(r.errors for r in rows),
        "input_tokens": sum(r.input_tokens for r in rows),
        "output_tokens": sum(r.output_tokens for r in rows),
        "total_tokens": sum(
            r.input_tokens + r.output_tokens + r.cached_input_tokens + r.cache_write_tokens
            for r in rows
        ),
        "cost_usd": format_usd(sum((r.cost for r in rows), Decimal(0))),
        "latency_ms": latency_all,
        "ttft_ms": ttft_all,
    }
    return {
        "object": "usage.series",
        "tenant": f.tenant,
        "from": _iso(f.start),
        "to": _iso(f.end),
        "bucket": bucket,
        "by": by,
        "points": [
            {
                "at": _bucket_start(r.bucket),
                "group": r.group,
                "requests": r.requests,
                "errors": r.errors,
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "cached_input_tokens": r.cached_input_tokens,
                "cache_write_tokens": r.cache_write_tokens,
                "total_tokens": r.input_tokens
                + r.output_tokens
                + r.cached_input_tokens
                + r.cache_write_tokens,
                "cost_usd": format_usd(r.cost),
            }
            for r in rows
        ],
        "latency": latency,
        "ttft": ttft,
        "totals": totals,
    }


async def usage_series(services: Services, caller: KeyRecord) -> dict[str, Any]:
    args = request.args
    params.check_params(args, (*params.FILTER_PARAMS, "bucket", "by"))
    f: LedgerFilter = params.ledger_filter(args, caller, services.clock.wall())
    raw_bucket = args.get("bucket", "hour")
    if raw_bucket not in ("hour", "day"):
        raise InvalidRequest(f"'bucket' must be 'hour' or 'day', not {raw_bucket!r}", param="bucket")
    bucket: Bucket = "hour" if raw_bucket == "hour" else "day"
    if bucket == "hour" and f.end - f.start > MAX_HOURLY_WINDOW:
        raise InvalidRequest(
            "Hourly buckets cover at most 31 days; use bucket=day for longer windows",
            param="bucket",
        )
    by = args.get("by") or None
    if by == "none":
        by = None
    if by is not None and by not in GROUP_COLUMNS:
        raise InvalidRequest(
            f"'by' must be one of {', '.join(GROUP_COLUMNS)} or none, not {by!r}", param="by"
        )
    storage = services.storage
    rows = await storage.usage_series(f, bucket, by)
    latency = await storage.usage_histogram(f, bucket, "latency_ms")
    ttft = await storage.usage_histogram(f, bucket, "ttft_ms")
    return series_answer(f, bucket, by, rows, latency, ttft)


def register(app: QuartTrio, services: Services) -> None:
    @app.get("/v1/me")
    async def me() -> dict[str, Any]:
        key = await require_key(services)
        return {**key_view(key), "spend": await spend_view(services.gateway.limits, key)}

    @app.get("/v1/requests")
    async def my_requests() -> dict[str, Any]:
        return await requests_page(services, await require_key(services))

    @app.get("/v1/usage/series")
    async def my_usage_series() -> dict[str, Any]:
        return await usage_series(services, await require_key(services))
