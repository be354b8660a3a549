"""Counters, gauges and histograms as plain numbers per label set, rendered only when scraped.

Owns: the storage of the gateway's metrics (adapters/metrics.py says which exist and
what they count) and `Families`, the prometheus-client `Collector` that turns them into
its metric families on a scrape, so `generate_latest` writes prometheus-client's own
text format and its parser reads it back.

Why not prometheus-client's `Counter`, `Gauge` and `Histogram`: each update takes a lock
and goes through a child object (a histogram's, one value object per bucket), which was
most of what counting a request cost. Here an update is one dict lookup and a float
addition (a histogram: a bisect and two additions on one list), or, on a cell kept, the
addition alone.

Rules:
- Updates and scrapes run on the Trio thread (the driver's observers and `GET
  /metrics` do), so nothing is locked; a label set's numbers are created on its first
  update and kept for the process's life, as prometheus-client's children were. The
  label values are the caller's to bound (adapters/metrics.py).
- A label set's numbers are one list (`Cell`), which `cell` gives: a caller counting the
  same label sets on every request keeps their cells and adds to them in place, with no
  label tuple to make and look up per update (adapters/metrics.py does, per run's labels).
  `cell` is asked only to update: asking makes the label set shown.
- A family without labels shows its zero from the start (as prometheus-client does); a
  labelled one shows only the label sets that were updated.
- Counters are exposed as `{name}_total`; histograms with cumulative `_bucket{le=...}`
  samples (a bound written as `repr` of its float, as prometheus-client writes one
  below a million), `_count` and `_sum`.
  No `_created` samples.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

Labels = tuple[str, ...]
Cell = list[float]  # a label set's numbers: a counter's or gauge's one, a histogram's buckets and sum
NONE: Labels = ()


class _Family:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)

    def metric(self) -> Metric:
        raise NotImplementedError


class CounterFamily(_Family):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        self.values: dict[Labels, Cell] = {} if labelnames else {NONE: [0.0]}

    def cell(self, labels: Labels) -> Cell:
        """The one-number list of the label set `labels` (made, and so shown, from now
        on): a caller that updates the same label set again keeps it and adds to it."""
        found = self.values.get(labels)
        if found is None:
            found = self.values[labels] = [0.0]
        return found

    def inc(self, labels: Labels = NONE, amount: float = 1.0) -> None:
        self.cell(labels)[0] += amount

    def metric(self) -> Metric:
        found = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self.values.items()):
            found.add_metric(labels, value[0])
        return found


class GaugeFamily(_Family):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        self.values: dict[Labels, Cell] = {} if labelnames else {NONE: [0.0]}

    def cell(self, labels: Labels) -> Cell:
        """As `CounterFamily.cell`."""
        found = self.values.get(labels)
        if found is None:
            found = self.values[labels] = [0.0]
        return found

    def set(self, labels: Labels, value: float) -> None:
        found = self.values.get(labels)
        if found is None:
            self.values[labels] = [value]
        else:
            found[0] = value

    def inc(self, labels: Labels = NONE, amount: float = 1.0) -> None:
        found = self.values.get(labels)
        if found is None:
            self.values[labels] = [amount]
        else:
            found[0] += amount

    def metric(self) -> Metric:
        found = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self.values.items()):
            found.add_metric(labels, value[0])
        return found


class HistogramFamily(_Family):
    """Per label set one list: a count per bucket (not cumulative; the last one is +Inf),
    then the sum of the observed values."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), *, buckets: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self._les = (*(repr(b) for b in self.bounds), "+Inf")  # as prometheus-client writes bounds below 1e6
        self.values: dict[Labels, list[float]] = {} if labelnames else {NONE: self._empty()}

    def _empty(self) -> list[float]:
        return [0.0] * (len(self.bounds) + 2)

    def cell(self, labels: Labels) -> Cell:
        """The counts and sum of the label set `labels` (made, and so shown, from now on),
        for `observe_into`: a caller that observes the same label set again keeps it."""
        found = self.values.get(labels)
        if found is None:
            found = self.values[labels] = self._empty()
        return found

    def observe_into(self, cell: Cell, value: float) -> None:
        cell[bisect_left(self.bounds, value)] += 1  # le: value <= bound
        cell[-1] += value

    def observe(self, labels: Labels, value: float) -> None:
        self.observe_into(self.cell(labels), value)

    def metric(self) -> Metric:
        found = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, counts in list(self.values.items()):
            total, buckets = 0.0, []
            for le, count in zip(self._les, counts, strict=False):  # the sum is left out
                total += count
                buckets.append((le, total))
            found.add_metric(labels, buckets, counts[-1])
        return found


Family = CounterFamily | GaugeFamily | HistogramFamily
F = TypeVar("F", CounterFamily, GaugeFamily, HistogramFamily)


class Families(Collector):
    """The collector of a registry: every family, rendered at each scrape."""

    def __init__(self) -> None:
        self.families: list[Family] = []

    def add(self, family: F) -> F:
        self.families.append(family)
        return family

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.metric()


__all__ = ["Cell", "CounterFamily", "Families", "GaugeFamily", "HistogramFamily", "Labels"]
