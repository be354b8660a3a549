"""Reading provider JSON defensively: the pieces every codec needs the same way.

Owns: what counts as a well-formed stream event (a JSON object; anything else is a cut
stream, `FailureKind.STREAM_CUT`, so the attempt machine treats it like a dropped
connection) and how an integer field is read from untrusted JSON (a missing field, a
non-object or a non-integer, including `true`, reads as None).
"""

from __future__ import annotations

import json
from typing import Any

from adapters.providers.base import ProviderError
from core.model import FailureKind


def event_object(provider: str, data: str) -> dict[str, Any]:
    """The JSON object in one SSE event's data, or ProviderError(STREAM_CUT)."""
    try:
        payload = json.loads(data)
    except ValueError:
        raise ProviderError(FailureKind.STREAM_CUT, f"{provider} sent a malformed stream event") from None
    if not isinstance(payload, dict):
        raise ProviderError(FailureKind.STREAM_CUT, f"{provider} sent a non-object event")
    return payload


def int_field(obj: object, key: str) -> int | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
