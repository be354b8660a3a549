"""Standard Webhooks: the published test vector, sign/verify round trip, tampering, tolerance."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import GatewayError
from core.webhooks import (
    RETRY_DELAYS,
    WebhookVerificationError,
    headers,
    new_secret,
    retry_schedule,
    sign,
    verify,
)

# The vector published with the Standard Webhooks reference libraries.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

secrets_ = st.binary(min_size=1, max_size=64).map(
    lambda key: "whsec_" + base64.b64encode(key).decode()
)
msg_ids = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() == s and s != "")
stamps = st.integers(min_value=0, max_value=2**40)


def test_published_vector_signs_exactly() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG


def test_published_vector_verifies_and_prefix_is_optional() -> None:
    hdrs = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS),
            "webhook-signature": VECTOR_SIG}
    assert verify(VECTOR_SECRET, hdrs, VECTOR_BODY, now=VECTOR_TS) is None
    assert verify(VECTOR_SECRET.removeprefix("whsec_"), hdrs, VECTOR_BODY, now=VECTOR_TS) is None


def test_headers_carry_id_timestamp_and_signature() -> None:
    assert headers(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": "1614265330",
        "webhook-signature": VECTOR_SIG,
    }


@given(secret=secrets_, msg_id=msg_ids, ts=stamps, body=st.binary(max_size=200),
       skew=st.integers(min_value=-300, max_value=300))
def test_round_trip_within_tolerance(
    secret: str, msg_id: str, ts: int, body: bytes, skew: int
) -> None:
    verify(secret, headers(secret, msg_id, ts, body), body, now=ts + skew)


@given(secret=secrets_, msg_id=msg_ids, ts=stamps, body=st.binary(max_size=200),
       flip=st.integers(min_value=0, max_value=10_000))
def test_any_changed_body_byte_is_detected(
    secret: str, msg_id: str, ts: int, body: bytes, flip: int
) -> None:
    hdrs = headers(secret, msg_id, ts, body)
    if body:
        i = flip % len(body)
        tampered = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1:]
    else:
        tampered = b"x"
    with pytest.raises(WebhookVerificationError):
        verify(secret, hdrs, tampered, now=ts)


def _vector_headers(**override: str) -> dict[str, str]:
    hdrs = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS),
            "webhook-signature": VECTOR_SIG}
    hdrs.update(override)
    return hdrs


@pytest.mark.parametrize(
    "hdrs",
    [
        _vector_headers(**{"webhook-id": VECTOR_ID + "x"}),
        _vector_headers(**{"webhook-signature": "v1,AAAA" + VECTOR_SIG[7:]}),
        _vector_headers(**{"webhook-signature": "v1a," + VECTOR_SIG[3:]}),  # wrong scheme
        _vector_headers(**{"webhook-signature": VECTOR_SIG[3:]}),  # no version
        _vector_headers(**{"webhook-signature": ""}),
        _vector_headers(**{"webhook-timestamp": "1614265331"}),  # signed content changes
        _vector_headers(**{"webhook-timestamp": "01614265330"}),  # not the signed text
        _vector_headers(**{"webhook-timestamp": "16142653.30"}),
        _vector_headers(**{"webhook-timestamp": "-1614265330"}),
        _vector_headers(**{"webhook-signature": "v1,ÿÿ"}),  # non-ASCII: rejected, no crash
    ],
)
def test_tampered_headers_are_rejected(hdrs: dict[str, str]) -> None:
    with pytest.raises(WebhookVerificationError):
        verify(VECTOR_SECRET, hdrs, VECTOR_BODY, now=VECTOR_TS)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_rejected(missing: str) -> None:
    hdrs = _vector_headers()
    del hdrs[missing]
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify(VECTOR_SECRET, hdrs, VECTOR_BODY, now=VECTOR_TS)


def test_wrong_secret_is_rejected() -> None:
    other = "whsec_" + base64.b64encode(b"another key").decode()
    with pytest.raises(WebhookVerificationError):
        verify(other, _vector_headers(), VECTOR_BODY, now=VECTOR_TS)


def test_header_names_are_case_insensitive() -> None:
    hdrs = {k.title(): v for k, v in _vector_headers().items()}
    verify(VECTOR_SECRET, hdrs, VECTOR_BODY, now=VECTOR_TS)


def test_space_separated_list_accepts_any_matching_v1_entry() -> None:
    sig = f"v1a,c29tZQ== v1,bm9wZQ== {VECTOR_SIG}"
    verify(VECTOR_SECRET, _vector_headers(**{"webhook-signature": sig}), VECTOR_BODY,
           now=VECTOR_TS)


@pytest.mark.parametrize("skew", [-301, 301, -10_000, 10_000])
def test_stale_or_future_timestamps_are_rejected(skew: int) -> None:
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(VECTOR_SECRET, _vector_headers(), VECTOR_BODY, now=VECTOR_TS + skew)


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_tolerance_bounds_are_inclusive(skew: int) -> None:
    verify(VECTOR_SECRET, _vector_headers(), VECTOR_BODY, now=VECTOR_TS + skew)


def test_custom_tolerance() -> None:
    verify(VECTOR_SECRET, _vector_headers(), VECTOR_BODY, now=VECTOR_TS + 1000, tolerance=1000)
    with pytest.raises(WebhookVerificationError):
        verify(VECTOR_SECRET, _vector_headers(), VECTOR_BODY, now=VECTOR_TS + 11, tolerance=10)


def test_error_is_a_gateway_error() -> None:
    with pytest.raises(GatewayError) as info:
        verify(VECTOR_SECRET, {}, VECTOR_BODY, now=VECTOR_TS)
    assert info.value.status == 400


@pytest.mark.parametrize("secret", ["whsec_not base64!", "whsec_", "whsec_abc"])
def test_bad_secret_raises_value_error(secret: str) -> None:
    with pytest.raises(ValueError, match="secret"):
        sign(secret, VECTOR_ID, VECTOR_TS, VECTOR_BODY)


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        (base64.b64decode(VECTOR_SECRET.removeprefix("whsec_")), VECTOR_SECRET),
        (b"\x00", "whsec_AA=="),
        (b"abc", "whsec_YWJj"),
        (bytes(range(24)), "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX"),
    ],
)
def test_new_secret_encodes_the_key_and_round_trips(key: bytes, secret: str) -> None:
    made = new_secret(key)
    assert made == secret
    hdrs = headers(made, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    assert verify(made, hdrs, VECTOR_BODY, now=VECTOR_TS) is None
    with pytest.raises(WebhookVerificationError):
        verify(new_secret(key + b"!"), hdrs, VECTOR_BODY, now=VECTOR_TS)


def test_new_secret_refuses_an_empty_key() -> None:
    with pytest.raises(ValueError, match="empty"):
        new_secret(b"")


def test_retry_schedule_is_documented_then_gives_up() -> None:
    assert [retry_schedule(n) for n in range(1, 8)] == [5.0, 30.0, 120.0, 600.0, 1800.0,
                                                       None, None]
    assert RETRY_DELAYS == (5.0, 30.0, 120.0, 600.0, 1800.0)
    with pytest.raises(ValueError):
        retry_schedule(0)


@given(st.integers(min_value=1, max_value=100))
def test_retry_delays_never_shrink(attempt: int) -> None:
    here, nxt = retry_schedule(attempt), retry_schedule(attempt + 1)
    if here is None:
        assert nxt is None
    elif nxt is not None:
        assert nxt >= here
