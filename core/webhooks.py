"""Standard Webhooks signing and verification, and the delivery retry schedule.

Owns: what makes a webhook delivery authentic, per the Standard Webhooks scheme, and how
long a sender waits between failed deliveries. Pure: `now` and timestamps are arguments
(unix seconds); the adapters send the HTTP request and keep the delivery record.

Rules:
- A secret is "whsec_" + base64(key); the key is the decoded bytes (a secret without the
  prefix is accepted as bare base64). An undecodable secret raises `ValueError`.
  `new_secret(key)` makes one from key bytes the caller drew (core draws no randomness);
  an empty key raises `ValueError`.
- The signed content is `f"{msg_id}.{timestamp}."` followed by the raw body bytes, signed
  with HMAC-SHA256; a signature is `"v1," + base64(mac)`.
- Headers (`headers()`): `webhook-id` (the same across retries of one message: receivers
  use it to drop repeats), `webhook-timestamp` (unix seconds, of this attempt),
  `webhook-signature` (space-separated `v1,<sig>` entries; other versions such as
  `v1a` are skipped by `verify`).
- `verify` looks headers up case-insensitively and raises `WebhookVerificationError`
  when one is missing, the timestamp is not an integer or is more than `tolerance`
  seconds away from `now` (either direction: too old is a replay, too new a bad clock),
  or no `v1` entry matches. Comparison uses `hmac.compare_digest` (constant time).
- Retries: `retry_schedule(attempt)` is the delay before the next delivery after
  `attempt` failed deliveries (1-based): 5 s, 30 s, 2 min, 10 min, 30 min, then None
  (give up). So a message gets at most 6 deliveries over about 43 minutes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

from core.errors import GatewayError

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300
RETRY_DELAYS: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 1800.0)


class WebhookVerificationError(GatewayError):
    """The delivery is not authentic (or too old/new); the receiver must reject it."""

    status = 400
    type = "invalid_request_error"
    code = "webhook_verification_failed"


def new_secret(key: bytes) -> str:
    """The `whsec_...` secret for `key` (random bytes the caller drew; 24+ recommended)."""
    if not key:
        raise ValueError("webhook secret key must not be empty")
    return SECRET_PREFIX + base64.b64encode(key).decode("ascii")


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError as exc:  # binascii.Error is a ValueError
        raise ValueError("webhook secret is not base64 after the 'whsec_' prefix") from exc
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def _signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """`timestamp` is the header text exactly as sent: it is what was signed."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of one delivery."""
    return _signature(_key(secret), msg_id, str(timestamp), body)


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: int,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Return None when the delivery is authentic; raise `WebhookVerificationError` if not."""
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or signature")
    if not (stamp.isascii() and stamp.isdigit()):
        raise WebhookVerificationError("webhook-timestamp is not unix seconds")
    if abs(now - int(stamp)) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance")
    expected = _signature(_key(secret), msg_id, stamp, body).encode("ascii")
    matched = False
    for entry in signatures.split():
        # compare every v1 entry (no early exit) so timing does not reveal which matched
        if entry.startswith("v1,"):
            matched |= hmac.compare_digest(entry.encode("utf-8"), expected)
    if not matched:
        raise WebhookVerificationError("no matching webhook signature")


def retry_schedule(attempt: int) -> float | None:
    """Delay (s) before the next delivery after `attempt` failed ones; None = give up."""
    if attempt < 1:
        raise ValueError("attempt counts failed deliveries and starts at 1")
    if attempt > len(RETRY_DELAYS):
        return None
    return RETRY_DELAYS[attempt - 1]
