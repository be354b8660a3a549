"""Idempotency keys against storage: claim a key, finish it, fail closed.

Owns: running `core.idempotency.step` through `Storage.idempotency_step` with the
gateway's clock (epoch seconds, which every process agrees on) and a fresh claim id per
request, and what a storage failure means here: the database is the only thing that
can say whether a key was used, so when it cannot be asked the request is refused with
a 503 and `Retry-After` rather than run twice (fail closed). A finish that cannot be
written is logged; the key's claim then lapses after `lock_seconds`.
"""

from __future__ import annotations

import logging
import secrets

from attrs import frozen

from adapters.clock import Clock
from adapters.storage.base import Storage
from core import idempotency as idem
from core.errors import GatewayError, ServiceUnavailable

log = logging.getLogger("umg.idempotency")


@frozen
class Claim:
    """This request holds (tenant, key) until it finishes."""

    tenant: str
    key: str
    owner: str


class IdempotencyKeys:
    def __init__(self, storage: Storage, clock: Clock, policy: idem.Policy) -> None:
        self.storage = storage
        self.clock = clock
        self.policy = policy
        # the database driver's own errors (sqlite3's or psycopg's, so psycopg is not
        # imported on SQLite); the storage's own GatewayErrors (a 503) pass as they are
        self._errors = tuple(e for e in storage.errors if not issubclass(e, GatewayError))

    async def _step(self, tenant: str, key: str, event: idem.Event) -> idem.Decision:
        def apply(record: idem.Record | None) -> tuple[idem.Decision, idem.Record | None]:
            new, decision = idem.step(record, event, self.policy)
            return decision, new

        return await self.storage.idempotency_step(tenant, key, apply)

    async def arrive(self, tenant: str, key: str, fingerprint: str) -> Claim | idem.Answer:
        """The claim to run the request under, or the answer to replay. Raises the
        client's error (422 another body, 409 still running) or a 503 (no database)."""
        owner = "idem_" + secrets.token_hex(12)
        event = idem.Arrive(fingerprint, owner, self.clock.epoch())
        try:
            decision = await self._step(tenant, key, event)
        except self._errors as err:
            log.warning("idempotency keys unavailable: %s", type(err).__name__)
            raise ServiceUnavailable(
                "Idempotency keys cannot be checked right now (storage unavailable); retry later",
                retry_after=1.0,
            ) from None
        if isinstance(decision, idem.Replay):
            return decision.answer
        error = idem.error_of(decision)
        if error is not None:
            raise error
        assert isinstance(decision, idem.Claimed), decision
        return Claim(tenant, key, owner)

    async def finish(self, claim: Claim, answer: idem.Answer, keep: bool) -> None:
        """Keep `answer` for the key, or release it (`keep` False)."""
        event = idem.Finish(claim.owner, answer, keep, self.clock.epoch())
        try:
            decision = await self._step(claim.tenant, claim.key, event)
        except self._errors as err:
            log.error("an idempotency key could not be finished (%s); its claim lapses in %ss",
                      type(err).__name__, self.policy.lock_seconds)
            return
        if isinstance(decision, idem.Lost):
            log.warning("an idempotency key's claim lapsed before its request finished")
