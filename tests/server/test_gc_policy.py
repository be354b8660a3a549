"""The serving process's collector settings (server/gc_policy.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from server.gc_policy import GEN0_THRESHOLD, tune_for_serving


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_serving_freezes_startup_objects_and_collects_the_young_generation_less_often() -> None:
    _, gen1, gen2 = gc.get_threshold()
    survivor: list[object] = []  # alive at startup: frozen, never scanned again
    tune_for_serving()
    assert gc.get_threshold() == (GEN0_THRESHOLD, gen1, gen2)
    assert gc.get_freeze_count() > 0
    assert gc.is_tracked(survivor)
    assert all(o is not survivor for o in gc.get_objects())
    cycle: list[object] = []
    cycle.append(cycle)  # a cycle made after startup is still found
    del cycle
    assert gc.collect() >= 1
