"""Failure mapping: status + headers + body -> FailureKind + retry_after; redaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from adapters.providers import http11
from adapters.providers.failures import (
    TRANSPORT_KINDS,
    error_from_payload,
    error_from_response,
    parse_go_duration,
    redact,
    retry_after_seconds,
    transport_error,
)
from core.model import FailureKind as K

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def openai_body(message: str, type_: str = "invalid_request_error", code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


def anthropic_body(type_: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": type_, "message": message},
                       "request_id": "req_1"}).encode()


STATUS_TABLE = [
    (400, b"{}", K.BAD_REQUEST),
    (401, openai_body("bad key", code="invalid_api_key"), K.AUTH),
    (402, anthropic_body("billing_error", "pay"), K.AUTH),
    (403, b"forbidden", K.AUTH),
    (404, openai_body("no model", code="model_not_found"), K.BAD_REQUEST),
    (408, b"", K.TIMEOUT),
    (409, b"", K.BAD_REQUEST),
    (413, anthropic_body("request_too_large", "big"), K.BAD_REQUEST),
    (418, b"", K.BAD_REQUEST),
    (422, b"", K.BAD_REQUEST),
    (429, openai_body("slow", "rate_limit_error", "rate_limit_exceeded"), K.RATE_LIMITED),
    (429, openai_body("quota", "insufficient_quota", "insufficient_quota"), K.AUTH),
    (429, anthropic_body("rate_limit_error", "slow"), K.RATE_LIMITED),
    (500, openai_body("oops", "server_error"), K.SERVER_ERROR),
    (500, anthropic_body("api_error", "oops"), K.SERVER_ERROR),
    (502, b"<html>bad gateway</html>", K.SERVER_ERROR),
    (503, b"", K.OVERLOADED),
    (504, anthropic_body("timeout_error", "slow"), K.TIMEOUT),
    (529, anthropic_body("overloaded_error", "Overloaded"), K.OVERLOADED),
    (599, b"", K.SERVER_ERROR),
    (400, openai_body("This model's maximum context length is 128000 tokens.",
                      code="context_length_exceeded"), K.CONTEXT_LENGTH),
    (400, anthropic_body("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
     K.CONTEXT_LENGTH),
    (400, openai_body("flagged", code="content_filter"), K.CONTENT_FILTER),
    (400, openai_body("nope", code="content_policy_violation"), K.CONTENT_FILTER),
]


@pytest.mark.parametrize(("status", "body", "kind"), STATUS_TABLE)
def test_status_and_body_map_to_kind(status: int, body: bytes, kind: K) -> None:
    err = error_from_response("p", status, {}, body, secrets=(), now=NOW)
    assert err.kind is kind
    assert err.status == status
    assert err.message.startswith(f"p returned {status}")


HTTP_DATE = "Fri, 02 Jan 2026 03:04:35 GMT"  # NOW + 30 s

RETRY_TABLE = [
    (429, {"retry-after": "7"}, 7.0),
    (429, {"Retry-After": "2.5"}, 2.5),
    (503, {"retry-after": HTTP_DATE}, 30.0),
    (429, {"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
    (429, {"retry-after": "Fri, 02 Jan 2026 03:00:00 GMT"}, 0.0),  # in the past
    (429, {"retry-after": "soon"}, None),
    (429, {}, None),
    (429, {"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-remaining-requests": "0",
           "x-ratelimit-reset-tokens": "1s", "x-ratelimit-remaining-tokens": "500"}, 360.0),
    (429, {"x-ratelimit-reset-requests": "20ms", "x-ratelimit-remaining-requests": "3",
           "x-ratelimit-reset-tokens": "1.5s", "x-ratelimit-remaining-tokens": "10"}, 1.5),
    (429, {"anthropic-ratelimit-tokens-reset": (NOW + timedelta(seconds=12)).isoformat(),
           "anthropic-ratelimit-tokens-remaining": "0",
           "anthropic-ratelimit-requests-reset": "2026-01-02T03:04:06Z",
           "anthropic-ratelimit-requests-remaining": "40"}, 12.0),
    (429, {"anthropic-ratelimit-requests-reset": "2026-01-02T03:04:08Z"}, 3.0),
    (429, {"retry-after": "4", "x-ratelimit-reset-requests": "1m"}, 4.0),  # explicit wins
    (500, {"x-ratelimit-reset-requests": "1m"}, None),  # reset headers only on 429
]


@pytest.mark.parametrize(("status", "headers", "expected"), RETRY_TABLE)
def test_retry_after_formats(status: int, headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(status, headers, NOW) == pytest.approx(expected)
    err = error_from_response("p", status, headers, b"", secrets=(), now=NOW)
    assert err.retry_after == pytest.approx(expected)


@pytest.mark.parametrize(("text", "seconds"), [
    ("1s", 1.0), ("6m0s", 360.0), ("12ms", 0.012), ("1h2m3.5s", 3723.5), ("250us", 0.00025),
    ("0s", 0.0), ("", None), ("5", None), ("1x", None), ("s1", None),
])
def test_go_durations(text: str, seconds: float | None) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


def test_mid_stream_error_payloads_map_by_type() -> None:
    def kind(type_: str) -> K:
        payload = {"type": "error", "error": {"type": type_, "message": "x"}}
        return error_from_payload("anthropic", payload, secrets=()).kind

    assert kind("overloaded_error") is K.OVERLOADED
    assert kind("rate_limit_error") is K.RATE_LIMITED
    assert kind("api_error") is K.SERVER_ERROR
    assert kind("invalid_request_error") is K.BAD_REQUEST
    assert kind("something_new") is K.SERVER_ERROR
    err = error_from_payload("openai", {"error": {"message": "boom", "type": "server_error"}}, secrets=())
    assert (err.kind, err.status) == (K.SERVER_ERROR, None)
    assert "boom" in err.message


KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"


def test_redaction_hides_whole_and_partial_keys() -> None:
    text = f"Incorrect API key provided: {KEY}. Also {KEY[:12]}...{KEY[-10:]} and normal-words-here"
    clean = redact(text, [KEY, None])
    assert KEY not in clean and KEY[:12] not in clean and KEY[-10:] not in clean
    assert "normal-words-here" in clean and "Incorrect API key provided" in clean
    assert redact("nothing secret", []) == "nothing secret"


def test_error_message_never_contains_the_key() -> None:
    body = openai_body(f"Incorrect API key provided: {KEY}", code="invalid_api_key")
    err = error_from_response("openai", 401, {}, body, secrets=(KEY,), now=NOW)
    assert err.kind is K.AUTH
    assert KEY not in err.message and KEY not in repr(err) and KEY not in str(err)
    assert "[redacted]" in err.message


def test_long_upstream_text_is_truncated() -> None:
    err = error_from_response("p", 500, {}, b"x " * 5000, secrets=(), now=NOW)
    assert len(err.message) < 600


@pytest.mark.parametrize(("exc", "kind"), [
    (http11.ConnectFailed("connecting", "refused"), K.CONNECT),
    (http11.ConnectTimedOut("connecting", "timed out"), K.CONNECT),
    (http11.PoolTimedOut("waiting for a free connection", "busy"), K.TIMEOUT),
    (http11.SendFailed("sending the request", "reset"), K.CONNECT),
    (http11.ResponseTimedOut("reading", "timed out"), K.TIMEOUT),
    (http11.ResponseCut("reading", "peer closed"), K.STREAM_CUT),
    (http11.RequestRejected("encoding the request", "bad header"), K.AUTH),
])
def test_transport_failures(exc: http11.TransportFailure, kind: K) -> None:
    err = transport_error(exc, secrets=(KEY,))
    assert err.kind is kind
    assert exc.what in err.message and exc.detail in err.message


def test_every_transport_failure_has_a_kind() -> None:
    classes = {c for c in vars(http11).values()
               if isinstance(c, type) and issubclass(c, http11.TransportFailure)}
    assert classes - {http11.TransportFailure} == set(TRANSPORT_KINDS)
