"""Suite-wide settings: Hypothesis profiles (fast by default, `long` for `make fuzz`), and
the order of the test files (the longest first)."""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", max_examples=100, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "long", max_examples=5000, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# The files whose tests take longest (`pytest --durations=30`), run first: with several
# workers (`make test`, --dist loadfile) a long file started last is a tail that one
# worker runs while the others have nothing left. Only the order changes.
LONGEST_FIRST = (
    "test_docs_examples.py",
    "test_api_fuzz.py",
    "test_e2e_postgres_budgets.py",
    "test_cli.py",
    "test_e2e_postgres_scale_out.py",
    "test_e2e_worker_processes.py",
    "test_e2e_idempotency_postgres.py",
    "test_process.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
