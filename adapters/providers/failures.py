"""Failure mapping: HTTP status, headers, error bodies and transport errors -> ProviderError.

Owns: the one place that decides which `FailureKind` an upstream failure is and how long
the provider asked us to wait (`retry_after`, seconds). Pure functions except that the
caller passes the current wall time (`now`, aware UTC) for date-based headers.

Rules:
- Status first (`STATUS_KINDS`, then class defaults: other 4xx BAD_REQUEST, other 5xx
  SERVER_ERROR), then the error body may refine it: context-length errors (OpenAI code
  `context_length_exceeded`, Anthropic "prompt is too long", "maximum context length")
  -> CONTEXT_LENGTH; `content_filter` -> CONTENT_FILTER; Anthropic `error.type` per
  `ANTHROPIC_ERROR_KINDS`; OpenAI `insufficient_quota` -> AUTH (an account problem that
  waiting does not fix).
- Wait hints, first found wins: `retry-after-ms`; `retry-after` (delta seconds or an
  HTTP date); on 429 only, the rate-limit reset headers: OpenAI `x-ratelimit-reset-*`
  (Go durations like `6m0s`, `1.5s`, `12ms`) and Anthropic `anthropic-ratelimit-*-reset`
  (RFC 3339). For those, the resets of exhausted limits (remaining == 0) win; if none
  is exhausted, the largest reset is used. Negative waits become 0.
- Upstream text is redacted of every secret (whole, or any 8+ character piece of it)
  and truncated before it goes into a message: keys never reach messages or logs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime

from adapters.providers import http11
from adapters.providers.base import ProviderError
from core.model import FailureKind

MAX_DETAIL_CHARS = 500

STATUS_KINDS: Mapping[int, FailureKind] = {
    400: FailureKind.BAD_REQUEST,
    401: FailureKind.AUTH,
    402: FailureKind.AUTH,  # Anthropic billing_error: the gateway's account
    403: FailureKind.AUTH,
    404: FailureKind.BAD_REQUEST,
    408: FailureKind.TIMEOUT,
    409: FailureKind.BAD_REQUEST,
    413: FailureKind.BAD_REQUEST,
    422: FailureKind.BAD_REQUEST,
    429: FailureKind.RATE_LIMITED,
    500: FailureKind.SERVER_ERROR,
    502: FailureKind.SERVER_ERROR,
    503: FailureKind.OVERLOADED,  # OpenAI: "slow down" / "engine overloaded"
    504: FailureKind.TIMEOUT,
    529: FailureKind.OVERLOADED,
}

ANTHROPIC_ERROR_KINDS: Mapping[str, FailureKind] = {
    "invalid_request_error": FailureKind.BAD_REQUEST,
    "authentication_error": FailureKind.AUTH,
    "billing_error": FailureKind.AUTH,
    "permission_error": FailureKind.AUTH,
    "not_found_error": FailureKind.BAD_REQUEST,
    "request_too_large": FailureKind.BAD_REQUEST,
    "rate_limit_error": FailureKind.RATE_LIMITED,
    "api_error": FailureKind.SERVER_ERROR,
    "timeout_error": FailureKind.TIMEOUT,
    "overloaded_error": FailureKind.OVERLOADED,
}

# OpenAI `error.code` / `error.type` values that decide the kind whatever the status.
OPENAI_CODE_KINDS: Mapping[str, FailureKind] = {
    "context_length_exceeded": FailureKind.CONTEXT_LENGTH,
    "content_filter": FailureKind.CONTENT_FILTER,
    "content_policy_violation": FailureKind.CONTENT_FILTER,
    "insufficient_quota": FailureKind.AUTH,
    "invalid_api_key": FailureKind.AUTH,
}

_CONTEXT_PHRASES = ("prompt is too long", "maximum context length", "context length")
_TOKENISH = re.compile(r"[A-Za-z0-9_\-]{8,}")
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNITS: Mapping[str, float] = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}


# ---- redaction ---------------------------------------------------------------------------


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every secret, and every 8+ character token that is part of one, hidden."""
    keys = [s for s in secrets if s]
    for key in keys:
        text = text.replace(key, "[redacted]")

    def hide(match: re.Match[str]) -> str:
        token = match.group(0)
        return "[redacted]" if any(token in key for key in keys) else token

    return _TOKENISH.sub(hide, text) if keys else text


def _detail(text: str, secrets: Iterable[str | None]) -> str:
    clean = redact(text, secrets)
    return clean if len(clean) <= MAX_DETAIL_CHARS else clean[:MAX_DETAIL_CHARS] + "..."


# ---- wait hints ---------------------------------------------------------------------------


def parse_go_duration(value: str) -> float | None:
    """Seconds in a Go duration (`1s`, `6m0s`, `1h2m3.5s`, `12ms`); None if not one."""
    text = value.strip()
    if not text:
        return None
    parts = _GO_PART.findall(text)
    if "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def _parse_date(value: str, *, rfc3339: bool) -> datetime | None:
    text = value.strip()
    try:
        if rfc3339:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        else:
            parsed = parsedate_to_datetime(text)
    except (ValueError, TypeError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else None


def _float(value: str) -> float | None:
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if number == number and number not in (float("inf"), float("-inf")) else None


def _reset_hint(headers: Mapping[str, str], now: datetime) -> float | None:
    """The rate-limit reset headers of either provider, as seconds to wait."""
    resets: list[tuple[bool, float]] = []  # (exhausted, seconds)
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("x-ratelimit-reset-"):
            seconds = parse_go_duration(value)
            remaining = headers.get("x-ratelimit-remaining-" + lower[len("x-ratelimit-reset-"):])
        elif lower.startswith("anthropic-ratelimit-") and lower.endswith("-reset"):
            when = _parse_date(value, rfc3339=True)
            seconds = None if when is None else (when - now).total_seconds()
            remaining = headers.get(lower[: -len("reset")] + "remaining")
        else:
            continue
        if seconds is not None:
            resets.append((remaining is not None and remaining.strip() == "0", seconds))
    if not resets:
        return None
    exhausted = [s for done, s in resets if done]
    return max(exhausted or [s for _, s in resets])


def retry_after_seconds(status: int, headers: Mapping[str, str], now: datetime) -> float | None:
    """How long the provider asked us to wait, in seconds (>= 0), or None. See module doc."""
    lowered = {k.lower(): v for k, v in headers.items()}
    hint: float | None = None
    if "retry-after-ms" in lowered:
        ms = _float(lowered["retry-after-ms"])
        hint = None if ms is None else ms / 1000
    if hint is None and "retry-after" in lowered:
        hint = _float(lowered["retry-after"])
        if hint is None:
            when = _parse_date(lowered["retry-after"], rfc3339=False)
            hint = None if when is None else (when - now).total_seconds()
    if hint is None and status == 429:
        hint = _reset_hint(lowered, now)
    return None if hint is None else max(0.0, hint)


# ---- error bodies --------------------------------------------------------------------------


def _error_fields(payload: object) -> tuple[str, str, str]:
    """(type, code, message) from an OpenAI or Anthropic error body; "" when absent."""
    if not isinstance(payload, dict):
        return "", "", ""
    error = payload.get("error", payload)
    if isinstance(error, str):
        return "", "", error
    if not isinstance(error, dict):
        return "", "", ""
    return _str(error.get("type")), _str(error.get("code")), _str(error.get("message"))


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def kind_from_error(base: FailureKind, err_type: str, code: str, message: str) -> FailureKind:
    """Refine `base` (from the status) with what the error body says."""
    lowered = message.lower()
    if code == "context_length_exceeded" or any(p in lowered for p in _CONTEXT_PHRASES):
        return FailureKind.CONTEXT_LENGTH
    for value in (code, err_type):
        if value in OPENAI_CODE_KINDS:
            return OPENAI_CODE_KINDS[value]
    if err_type in ANTHROPIC_ERROR_KINDS and base in (
        FailureKind.BAD_REQUEST, FailureKind.SERVER_ERROR
    ):
        return ANTHROPIC_ERROR_KINDS[err_type]
    return base


def error_from_payload(
    provider: str, payload: object, *, secrets: Iterable[str | None],
    base: FailureKind = FailureKind.SERVER_ERROR, status: int | None = None,
    retry_after: float | None = None,
) -> ProviderError:
    """A ProviderError from a decoded error object (also used for mid-stream errors)."""
    err_type, code, message = _error_fields(payload)
    kind = kind_from_error(base, err_type, code, message)
    if status is None and err_type in ANTHROPIC_ERROR_KINDS:
        kind = kind_from_error(ANTHROPIC_ERROR_KINDS[err_type], "", code, message)
    label = " ".join(x for x in (err_type, code) if x) or "error"
    where = f"{provider} returned {status}" if status is not None else f"{provider} stream"
    text = f"{where} ({label}): {message or 'no message'}"
    return ProviderError(kind, _detail(text, secrets), status=status, retry_after=retry_after)


def error_from_response(
    provider: str, status: int, headers: Mapping[str, str], body: bytes, *,
    secrets: Iterable[str | None], now: datetime,
) -> ProviderError:
    """The ProviderError for a non-success HTTP response."""
    base = STATUS_KINDS.get(
        status, FailureKind.SERVER_ERROR if status >= 500 else FailureKind.BAD_REQUEST
    )
    wait = retry_after_seconds(status, headers, now)
    try:
        payload: object = json.loads(body)
    except ValueError:
        payload = {"error": {"message": body.decode("utf-8", "replace").strip()}}
    return error_from_payload(
        provider, payload, secrets=secrets, base=base, status=status, retry_after=wait
    )


# ---- transport errors ----------------------------------------------------------------------

# One kind per failure of the HTTP client (`http11`); a failure mid-body is a cut stream.
TRANSPORT_KINDS: Mapping[type[http11.TransportFailure], FailureKind] = {
    http11.ConnectFailed: FailureKind.CONNECT,
    http11.ConnectTimedOut: FailureKind.CONNECT,
    http11.PoolTimedOut: FailureKind.TIMEOUT,
    http11.SendFailed: FailureKind.CONNECT,
    http11.ResponseTimedOut: FailureKind.TIMEOUT,
    http11.ResponseCut: FailureKind.STREAM_CUT,
    http11.RequestRejected: FailureKind.AUTH,  # the provider key is not a valid header value
}


def transport_error(
    exc: http11.TransportFailure, *, secrets: Iterable[str | None] = ()
) -> ProviderError:
    """The ProviderError for a failure of the HTTP client (`exc.what`: its phase)."""
    kind = TRANSPORT_KINDS.get(type(exc), FailureKind.CONNECT)
    return ProviderError(kind, _detail(f"{kind.value} while {exc.what}: {exc.detail}", secrets))
