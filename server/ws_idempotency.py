"""`idempotency_key` on a WebSocket `response.create`: one request's key, claimed, recorded
and replayed, as `server/idempotent.py` does for HTTP.

Owns: what a keyed `response.create` frame gets. The rules are `core.idempotency`'s and
the storage side `adapters/idempotency.py`'s (scoped per tenant, fail closed: 503 when
the database cannot be asked); this module only adapts them to frames:

- The fingerprint is of the route `/v1/responses/ws` and the message's `request` object
  (so the same key sent over HTTP, or with another request, is a 422
  `idempotency_key_reused`); a key still running (on any connection, in any process) is
  a 409 `idempotency_key_in_use` with `retry_after`. Both are `error` frames for the
  message's `id`, as is a malformed key (400 naming `idempotency_key`).
- What is kept is the request's frames as sent, without the client's `id` (a repeat may
  come with another id, on another connection). A replay sends them again with the
  repeat's `id` and `"idempotent_replayed": true` added to each: no provider call, no
  ledger row, no bill.
- An answer is kept when it ended with its terminal frame (`response.completed`,
  `response.incomplete`, `response.failed`) and was billed or a success
  (`core.idempotency.keeps`); otherwise (cancelled, the socket closed, refused before it
  started) the key is released, so the client can send it again.
"""

from __future__ import annotations

import json
from typing import Any

from adapters.idempotency import Claim, IdempotencyKeys
from core import idempotency as idem
from core.errors import InvalidRequest

ROUTE = "/v1/responses/ws"
PARAM = "idempotency_key"
ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})
Frame = dict[str, Any]


def checked(value: object) -> str:
    """The message's key, or a 400 naming `idempotency_key`."""
    if not isinstance(value, str):
        raise InvalidRequest("'idempotency_key' must be a string", param=PARAM)
    try:
        return idem.check_key(value)
    except InvalidRequest as err:
        raise InvalidRequest(err.message.replace("Idempotency-Key", PARAM), param=PARAM) from None


async def arrive(keys: IdempotencyKeys, tenant: str, key: str, request: object) -> Claim | list[Frame]:
    """The claim to run the request under, or the frames to replay; raises the client's
    error (422, 409) or a 503."""
    got = await keys.arrive(tenant, key, idem.fingerprint(ROUTE, {"request": request}))
    if isinstance(got, idem.Answer):
        return [json.loads(chunk) for chunk in got.chunks]
    return got


def replayed(frame: Frame) -> Frame:
    return {**frame, "idempotent_replayed": True}


async def finish(keys: IdempotencyKeys, claim: Claim, frames: list[Frame], *, billed: bool,
                 failed: bool) -> None:  # fmt: skip
    """Keep the frames for the key (answered whole, billed or a success), else release it."""
    complete = bool(frames) and frames[-1].get("type") in ENDS
    chunks = tuple(json.dumps(f, separators=(",", ":"), ensure_ascii=False).encode() for f in frames)
    keep = idem.keeps(200, complete, billed, failed)
    await keys.finish(claim, idem.Answer(200, (), chunks), keep)
