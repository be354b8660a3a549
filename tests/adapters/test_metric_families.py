"""adapters/metric_families.py: the plain families render what prometheus-client's own
metrics would, read back by its text parser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from adapters.metric_families import CounterFamily, Families, GaugeFamily, HistogramFamily

BUCKETS = (0.0005, 0.001, 0.01, 0.1, 1.0, 2.5, 300.0)
LABEL = st.sampled_from(["a", "b", "c"])
VALUE = st.one_of(st.sampled_from(BUCKETS), st.floats(min_value=0, max_value=1000, allow_nan=False))


def parsed(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if not s.name.endswith("_created")
    }


@settings(max_examples=60, deadline=None)
@given(
    observed=st.lists(st.tuples(LABEL, VALUE), max_size=30),
    counted=st.lists(st.tuples(LABEL, st.floats(min_value=0, max_value=1e6)), max_size=30),
    gauged=st.lists(st.tuples(LABEL, st.floats(min_value=-1e6, max_value=1e6)), max_size=10),
)
def test_the_families_expose_what_prometheus_clients_metrics_expose(
    observed: list[tuple[str, float]], counted: list[tuple[str, float]], gauged: list[tuple[str, float]]
) -> None:
    theirs = CollectorRegistry()
    histogram = Histogram("h_seconds", "h", ["l"], buckets=BUCKETS, registry=theirs)
    counter = Counter("c", "c", ["l"], registry=theirs)
    gauge = Gauge("g", "g", ["l"], registry=theirs)
    bare = Histogram("bare_seconds", "no labels", buckets=BUCKETS, registry=theirs)
    in_flight = Gauge("in_flight", "no labels", registry=theirs)

    families = Families()
    ours = CollectorRegistry()
    ours.register(families)
    h = families.add(HistogramFamily("h_seconds", "h", ["l"], buckets=BUCKETS))
    c = families.add(CounterFamily("c", "c", ["l"]))
    g = families.add(GaugeFamily("g", "g", ["l"]))
    b = families.add(HistogramFamily("bare_seconds", "no labels", buckets=BUCKETS))
    f = families.add(GaugeFamily("in_flight", "no labels"))

    for label, value in observed:
        histogram.labels(label).observe(value)
        h.observe((label,), value)
        bare.observe(value)
        b.observe((), value)
        in_flight.inc()
        f.inc()
    for label, amount in counted:
        counter.labels(label).inc(amount)
        c.inc((label,), amount)
        in_flight.dec()
        f.inc(amount=-1.0)
    for label, value in gauged:
        gauge.labels(label).set(value)
        g.set((label,), value)

    mine, expected = parsed(generate_latest(ours)), parsed(generate_latest(theirs))
    assert mine.keys() == expected.keys()
    for name, value in expected.items():
        assert abs(mine[name] - value) <= 1e-9 * max(1.0, abs(value)), name


def test_a_value_on_a_bound_is_in_that_bucket_and_the_sum_and_count_follow() -> None:
    families = Families()
    registry = CollectorRegistry()
    registry.register(families)
    h = families.add(HistogramFamily("t_seconds", "t", ["surface"], buckets=(0.1, 1.0)))
    for value in (0.1, 0.5, 1.0, 7.0):
        h.observe(("chat",), value)
    found = parsed(generate_latest(registry))
    bucket = {le: found[("t_seconds_bucket", (("le", le), ("surface", "chat")))] for le in ("0.1", "1.0", "+Inf")}
    assert bucket == {"0.1": 1, "1.0": 3, "+Inf": 4}
    assert found[("t_seconds_count", (("surface", "chat"),))] == 4
    assert found[("t_seconds_sum", (("surface", "chat"),))] == 8.6
