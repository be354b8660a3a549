"""The chat stream's framer (server/routes/chat.py): a text chunk rendered from its
precompiled template is, byte for byte, what encoding the whole chunk writes."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from adapters.execution import Execution
from adapters.storage.records import KeyRecord
from core.model import GatewayRequest, Message, StreamEnd, TextDelta, Usage, UsageReport
from core.sse import SSEDecoder, encode_event
from server.http import to_json
from server.routes.chat import ChatFramer
from server.wire.openai_chat import ChatStreamEncoder

KEY = KeyRecord(
    id="key_1", prefix="umg_0001", secret_hash="0" * 64, tenant="t1", project="p1", name=None,
    rpm=None, tpm=None, budget_usd=None, budget_period="month",
    created_at=datetime(2026, 1, 1, tzinfo=UTC), revoked_at=None,
)


def execution(request_id: str, model: str) -> Execution:
    request = GatewayRequest(model=model, messages=(Message(role="user"),))
    return Execution(request_id=request_id, key=KEY, request=request, endpoint="chat.completions", started=0.0)


def general(request_id: str, model: str, created: int, include_usage: bool, text: str) -> bytes:
    encoder = ChatStreamEncoder(completion_id="chatcmpl-" + request_id.removeprefix("req_"),
                                created=created, model=model, include_usage=include_usage)
    return b"".join(encode_event(to_json(c)) for c in encoder.on_event(TextDelta(text)))


@given(
    request_id=st.text(min_size=1, max_size=30),
    model=st.text(max_size=40),
    created=st.integers(min_value=0, max_value=2**40),
    include_usage=st.booleans(),
    texts=st.lists(st.text(max_size=60), min_size=1, max_size=5),
)
def test_a_text_frame_is_what_the_general_encoder_writes(
    request_id: str, model: str, created: int, include_usage: bool, texts: list[str]
) -> None:
    exe = execution(request_id, model)
    framer = ChatFramer(exe, created, include_usage, "req-client")
    for text in texts:
        assert framer.event(exe, TextDelta(text)) == general(request_id, model, created, include_usage, text)


def test_a_text_frame_decodes_to_the_chunk_and_nothing_follows_the_end() -> None:
    exe = execution("req_abc", "gpt-x")
    framer = ChatFramer(exe, 7, True, "req-client")
    assert framer._text is not None  # the template is used for this ordinary model name
    frame = framer.event(exe, TextDelta('he said "hi"\n\u2028 ok'))
    (event,) = SSEDecoder().feed(frame)
    assert event.data == to_json(ChatStreamEncoder("chatcmpl-abc", 7, "gpt-x", True).text_chunk('he said "hi"\n\u2028 ok'))
    assert framer.event(exe, TextDelta("")) == b""
    framer.event(exe, UsageReport(Usage(input_tokens=1)))
    framer.event(exe, StreamEnd("stop"))
    assert framer.finish(exe).endswith(encode_event("[DONE]"))
    assert framer.event(exe, TextDelta("late")) == b""  # after the final chunks: nothing


def test_a_model_name_holding_the_slot_falls_back_to_the_general_encoder() -> None:
    model = "\u2063umg-text\u2063"  # the slot itself: it would occur twice in the chunk
    exe = execution("req_1", model)
    framer = ChatFramer(exe, 1, False, "req-client")
    assert framer._text is None
    assert framer.event(exe, TextDelta("x")) == general("req_1", model, 1, False, "x")
