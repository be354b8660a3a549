"""The short fault run (`make soak` is the long one): see tests/soak.py for what it checks."""

from __future__ import annotations

from pathlib import Path

from tests.soak import SURFACES, Report, run_soak


async def test_a_short_fault_run_keeps_every_answer_explicit_and_the_ledger_exact(
    tmp_path: Path,
) -> None:
    report = await run_soak(72, concurrency=8, rate=0.35, seed=7, workdir=tmp_path)
    print("\n".join(report.lines()))
    assert report.problems == []
    assert report.outcomes["broken"] == 0
    assert report.outcomes["success"] + report.outcomes["explicit_error"] == 72
    assert report.rows == 72 and report.rows_by_status["ok"] == report.outcomes["success"]
    # the faults really happened, of every kind, and the gateway recovered from most
    assert set(report.injected) == {"500", "429", "reset", "stall", "cut", "error_event"}
    assert report.upstream_requests > 72 and report.outcomes["success"] > 36


def test_the_audit_fails_on_a_lost_row_a_broken_answer_or_a_wrong_cost() -> None:
    good = Report(requests=len(SURFACES), rows=len(SURFACES))
    good.outcomes["success"] = good.rows_by_status["ok"] = len(SURFACES)
    assert good.problems == []
    lost = Report(requests=2, rows=1)
    assert "1 ledger rows for 2 requests" in lost.problems
    broken = Report(requests=0, broken=["chat_stream: 200 'data: {...'"])
    assert broken.problems == ["broken answer: chat_stream: 200 'data: {...'"]
    wrong = Report(requests=0, cost_mismatches=["req_1: cost 1 not in [2, 2]"])
    assert wrong.problems == ["req_1: cost 1 not in [2, 2]"]
