"""`Limits` on SQLite reuses the buckets it parsed for the state it stored last; any other
state stored in the scope is parsed, so what is stored is always what counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from adapters.clock import Clock
from adapters.limits import Limits
from adapters.storage import open_storage
from core.errors import RateLimited
from tests.adapters.test_storage import make_key


async def test_each_take_and_adjust_counts_from_the_state_stored(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    del mock_clock  # a clock that does not move: no refill between the takes
    storage = open_storage(f"sqlite:///{tmp_path / 'limits.db'}")
    await storage.migrate()
    try:
        limits = Limits(storage, Clock())
        key = make_key(1, rpm=10, tpm=1000, budget_usd=None)
        scope = f"rl:{key.id}"
        said = await limits.take_rate(key, 100)
        assert (said["x-ratelimit-remaining-requests"], said["x-ratelimit-remaining-tokens"]) == ("9", "900")
        said = await limits.take_rate(key, 100)  # from the state it stored: the buckets kept
        assert (said["x-ratelimit-remaining-requests"], said["x-ratelimit-remaining-tokens"]) == ("8", "800")
        await limits.adjust_tokens(key, 50)
        stored = await storage.read_state(scope)
        assert stored is not None and stored["tokens"]["level"] == 750.0
        said = await limits.take_rate(key, 100)
        assert said["x-ratelimit-remaining-tokens"] == "650"

        def drained(state: dict[str, object] | None) -> tuple[None, dict[str, object]]:
            assert state is not None
            tokens = dict(state["tokens"])  # type: ignore[call-overload]
            return None, {**state, "tokens": {**tokens, "level": 100.0}}

        await storage.update_state(scope, drained)  # stored by someone else: a new dict
        said = await limits.take_rate(key, 100)
        assert (said["x-ratelimit-remaining-requests"], said["x-ratelimit-remaining-tokens"]) == ("6", "0")
        with pytest.raises(RateLimited):
            await limits.take_rate(key, 1)
        await limits.adjust_tokens(key, -40)  # a refund, on the state the refusal left
        stored = await storage.read_state(scope)
        assert stored is not None and stored["tokens"]["level"] == 40.0
    finally:
        await storage.close()
