"""The outcome rule: every ending has a terminal status, never `in_progress`."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from core import errors
from core.outcome import STATUSES, Answered, Canceled, Failed, outcome

ERRORS = [
    cls for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.GatewayError)
]


@given(st.sampled_from(ERRORS))
def test_a_failure_records_its_code_and_a_terminal_status(cls: type[errors.GatewayError]) -> None:
    result = outcome(Failed(cls("x")))
    assert result.error_code == cls.code
    assert result.status in STATUSES and result.status not in ("ok", "canceled", "in_progress")


def test_the_named_statuses() -> None:
    assert outcome(Answered()).status == "ok" and outcome(Answered()).error_code is None
    assert outcome(Canceled()).status == "canceled" and outcome(Canceled()).error_code is None
    assert outcome(Failed(errors.RateLimited("x"))).status == "rate_limited"
    assert outcome(Failed(errors.BudgetExceeded("x"))).status == "budget_exceeded"
    assert outcome(Failed(errors.ClientClosed("x"))).status == "client_closed"
    assert outcome(Failed(errors.ServiceUnavailable("x"))).status == "error"
