"""A short schemathesis run over /openapi.json as served (`make fuzz-api` is the long one)."""

from __future__ import annotations

from tests.api_fuzz import GENERATED, run


def test_a_short_schemathesis_run_finds_no_violation() -> None:
    status, report = run(examples=25, min_cases=300, seed=3, phases="examples,fuzzing,stateful")
    assert status == 0, report[-6000:]
    assert int(GENERATED.findall(report)[-1]) >= 300
