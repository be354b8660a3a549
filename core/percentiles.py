"""Latency percentiles from histograms: the bins and the estimate.

Owns: how the console's latency and time-to-first-token percentiles are computed
without reading every ledger row. Storage counts rows per bin (one SQL CASE over
`BOUNDS_MS`); this module turns counts into percentiles.

Rules:
- Bin `i` holds values `v` with `BOUNDS_MS[i-1] <= v < BOUNDS_MS[i]` (bin 0 starts at 0,
  and the last bin, `len(BOUNDS_MS)`, holds everything from the last bound up). Past
  10 ms each bound is 1.4x to 2x the one before, so an estimate, which always lies in
  the bin of the true percentile, is off by less than that bin's width.
- `percentile(counts, q)` is the nearest-rank percentile's bin (the bin holding the
  `ceil(q * n)`-th smallest value), with a linear estimate inside that bin by rank. The
  last bin has no upper end, so its estimate is its lower bound.
- An empty histogram has no percentile (None). `q` must be in (0, 1].
- Negative values (a clock that went backwards) fall into bin 0.
- `quantiles(counts, qs)` gives, for counts of every bin in order (a sequence of
  `BINS` counts, as the rollups store them), what `percentile` gives for each `q`: one
  walk over the bins for all of them (the console asks four per hour of a chart).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

BOUNDS_MS: tuple[int, ...] = (
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700,
    1000, 1500, 2000, 3000, 5000, 7000, 10000, 15000, 20000, 30000, 45000,
    60000, 90000, 120000, 180000, 300000, 600000,
)  # fmt: skip
BINS = len(BOUNDS_MS) + 1


def bin_of(value: int) -> int:
    for i, bound in enumerate(BOUNDS_MS):
        if value < bound:
            return i
    return len(BOUNDS_MS)


def bin_range(i: int) -> tuple[int, int | None]:
    """`[low, high)` of bin `i` (high None for the last, open-ended bin)."""
    if not 0 <= i < BINS:
        raise ValueError(f"no bin {i}: bins are 0..{BINS - 1}")
    low = 0 if i == 0 else BOUNDS_MS[i - 1]
    return low, BOUNDS_MS[i] if i < len(BOUNDS_MS) else None


def histogram(values: Iterable[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for v in values:
        b = bin_of(v)
        counts[b] = counts.get(b, 0) + 1
    return counts


def merge(histograms: Iterable[Mapping[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for h in histograms:
        for b, n in h.items():
            out[b] = out.get(b, 0) + n
    return out


def percentile(counts: Mapping[int, int], q: float) -> float | None:
    """The estimated `q`-quantile (0 < q <= 1) of the values counted in `counts`."""
    if not (math.isfinite(q) and 0 < q <= 1):
        raise ValueError(f"q must be in (0, 1], not {q}")
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))  # 1-based rank of the wanted value
    seen = 0
    for b in sorted(counts):
        n = counts[b]
        if n <= 0:
            continue
        if seen + n >= rank:
            return _estimate(b, rank, seen, n)
        seen += n
    raise AssertionError("unreachable: rank <= total")


def _estimate(b: int, rank: int, seen: int, n: int) -> float:
    low, high = bin_range(b)
    if high is None:
        return float(low)
    return low + (high - low) * (rank - seen - 0.5) / n


def quantiles(counts: Sequence[int], qs: Sequence[float]) -> list[float | None]:
    """`percentile({i: counts[i]}, q)` for each `q` of `qs`, in one walk over the bins
    (`counts[i]`: how many values bin `i` holds; `qs` in increasing order)."""
    if len(counts) > BINS:
        raise ValueError(f"{len(counts)} counts for {BINS} bins")
    for q in qs:
        if not (math.isfinite(q) and 0 < q <= 1):
            raise ValueError(f"q must be in (0, 1], not {q}")
    if any(a > b for a, b in zip(qs, qs[1:], strict=False)):
        raise ValueError(f"the quantiles must be in increasing order, not {list(qs)}")
    total = sum(n for n in counts if n > 0)
    if total <= 0:
        return [None] * len(qs)
    ranks = [max(1, math.ceil(q * total)) for q in qs]
    out: list[float | None] = []
    seen = 0
    for b, n in enumerate(counts):
        if n <= 0:
            continue
        while len(out) < len(ranks) and seen + n >= ranks[len(out)]:
            out.append(_estimate(b, ranks[len(out)], seen, n))
        if len(out) == len(ranks):
            break
        seen += n
    return out
