"""docs/examples/asyncio_gateway.py: the core driven from plain asyncio, run as a real process.

Owns: the proof behind docs/reuse.md — the example runs without Trio, falls back from the
provider that is down to the one that answers, streams the answer, and bills exactly
price x tokens against a budget it settles (nothing left reserved).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "asyncio_gateway.py"


def run_example() -> tuple[list[str], dict[str, object]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    return lines, json.loads(lines[-1])


def test_example_streams_falls_back_and_bills_exactly_without_trio() -> None:
    lines, summary = run_example()
    assert lines[0] == "Hello from an asyncio gateway."  # streamed piece by piece, then a newline
    assert summary["status"] == "ok"
    assert summary["text"] == "Hello from an asyncio gateway."
    assert summary["attempts"] == [["alpha", "overloaded"], ["beta", "ok"]]
    assert summary["trio_imported"] is False
    # beta's price: 3.00 in / 6.00 out per 1M; it reported 4 prompt and 6 completion tokens
    expected = (4 * Decimal("3.00") + 6 * Decimal("6.00")) / 1_000_000
    assert Decimal(str(summary["cost_usd"])) == expected
    assert Decimal(str(summary["budget_spent_usd"])) == expected
    assert Decimal(str(summary["budget_reserved_usd"])) == 0


def test_docs_reuse_page_names_every_core_call_the_example_makes() -> None:
    page = (ROOT / "docs" / "reuse.md").read_text()
    source = EXAMPLE.read_text()
    for call in (
        "ratelimit.take_all",
        "routing.plan",
        "attempts.start",
        "attempts.step",
        "grants.grant",
        "budget.settle",
        "budget.release",
        "metering.observe",
        "metering.consumed",
        "billing.cost",
        "outcome.outcome",
        "SSEDecoder",
        "encode_event",
    ):
        assert call in source, call
        assert call in page, call
