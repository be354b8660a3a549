"""End to end, on raw sockets: slow request heads and bodies are timed out, and the bytes
of bodies in flight are bounded across connections.

The gateway runs with short limits (`limits.header_timeout_seconds`,
`body_timeout_seconds`, `body_budget_bytes` through the environment, as an operator would
set them). A head or body trickled in slower than allowed is cut (a 408 in the OpenAI
error shape for a body, and the connection closed); a body that does not fit the budget
gets a 503 with `retry-after` at once; the budget is given back when bodies are done; an
SSE answer that takes longer than the header timeout is not cut.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests.server import conftest as server_conftest
from tests.server.conftest import Running, start_gateway
from tests.server.test_e2e_bad_input import host_port, read_until_closed, request_head

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
PATIENT_BODY_TIMEOUT = 600.0
MAX_BODY = 4096
BUDGET = 2 * MAX_BODY
OK_BODY = json.dumps({"model": "mock-fast", "input": "hi"}).encode()


async def limited_gateway(
    nursery: trio.Nursery, tmp_path: Path, *, body_timeout: float
) -> Running:
    cfg = tmp_path / "umg.toml"
    cfg.write_text(f"[limits]\nmax_body_bytes = {MAX_BODY}\n")
    settings = server_conftest.test_settings(
        tmp_path,
        UMG_CONFIG=str(cfg),
        UMG_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        UMG_BODY_TIMEOUT_SECONDS=str(body_timeout),
        UMG_BODY_BUDGET_BYTES=str(BUDGET),
    )
    return await start_gateway(nursery, settings)


@pytest.fixture
async def gateway(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    running = await limited_gateway(nursery, tmp_path, body_timeout=BODY_TIMEOUT)
    yield running
    running.stop.set()


@pytest.fixture
async def patient_gateway(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    """The same limits with a body timeout no step of a test reaches, even on a loaded
    machine: for the tests of the budget, where bodies are held open on purpose (with
    BODY_TIMEOUT a held body could be cut by a 408 before the test completes it)."""
    running = await limited_gateway(nursery, tmp_path, body_timeout=PATIENT_BODY_TIMEOUT)
    yield running
    running.stop.set()


def padded(size: int) -> bytes:
    """A valid request body of exactly `size` bytes."""
    body = json.dumps({"model": "mock-fast", "input": "x"}).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


def response_of(data: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    length = int(headers.get("content-length", "0"))
    return int(lines[0].split()[1]), headers, json.loads(rest[:length] or b"{}")


async def connect(gw: Running) -> trio.SocketStream:
    host, port = host_port(gw.url)
    return await trio.open_tcp_stream(host, port)


async def trickle(stream: trio.SocketStream, data: bytes, every: float, sent: trio.Event | None = None) -> None:
    """Send `data` a few bytes at a time until it is sent (then `sent` is set) or the
    server hangs up."""
    try:
        for i in range(0, len(data), 4):
            await stream.send_all(data[i : i + 4])
            await trio.sleep(every)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
    if sent is not None:
        sent.set()


# How long a test waits for the server to hang up: a guard against a hang only, far
# longer than the cut takes even on a loaded machine. That the cut came from the timeout
# is shown by what happened first (the trickle had not ended), never by a timed bound.
HANG_GUARD = 120.0


async def test_a_slow_request_head_is_cut(gateway: Running) -> None:
    head = request_head("/v1/responses", gateway.key, f"content-length: {len(OK_BODY)}\r\n")
    stream = await connect(gateway)
    sent = trio.Event()
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(trickle, stream, head, 0.5, sent)  # about 22 s for the whole head
        started = trio.current_time()
        _, closed = await read_until_closed(stream, seconds=HANG_GUARD)
        elapsed = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert closed, "a trickled head still held its connection"
    assert not sent.is_set(), "the head was sent whole before the server hung up"
    assert elapsed >= HEADER_TIMEOUT * 0.8, elapsed  # not before the timeout


async def test_a_slow_body_gets_408_and_the_connection_closes(gateway: Running) -> None:
    body = padded(2000)
    head = request_head("/v1/responses", gateway.key, f"content-length: {len(body)}\r\n")
    stream = await connect(gateway)
    sent = trio.Event()
    async with stream, trio.open_nursery() as nursery:
        await stream.send_all(head)
        nursery.start_soon(trickle, stream, body, 0.1, sent)  # 50 s for the whole body
        started = trio.current_time()
        data, closed = await read_until_closed(stream, seconds=HANG_GUARD)
        elapsed = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert not sent.is_set(), "the body was sent whole before the server answered"
    status, headers, err = response_of(data)
    assert status == 408, data
    assert headers["connection"] == "close"
    assert err["error"]["code"] == "request_timeout", err  # type: ignore[index]
    assert err["error"]["request_id"] == headers["x-request-id"], (err, headers)  # type: ignore[index]
    assert closed
    assert elapsed >= BODY_TIMEOUT * 0.8, elapsed  # not before the timeout


async def test_a_body_sent_in_pieces_within_the_deadline_is_served(gateway: Running) -> None:
    head = request_head("/v1/responses", gateway.key, f"content-length: {len(OK_BODY)}\r\n")
    stream = await connect(gateway)
    async with stream:
        await stream.send_all(head)
        third = len(OK_BODY) // 3
        for piece in (OK_BODY[:third], OK_BODY[third : 2 * third], OK_BODY[2 * third :]):
            await stream.send_all(piece)
            await trio.sleep(0.1)
        data = await read_response(stream)
    status, _, answer = response_of(data)
    assert status == 200, data
    assert answer["object"] == "response"


async def read_response(stream: trio.SocketStream) -> bytes:
    """One whole response with a `content-length` (the connection may stay open). The
    60 s bound is a hang guard: which answer came (200 or 408) is what callers check."""
    data = b""
    with trio.fail_after(60):
        while True:
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep:
                length = int(response_of(head + sep)[1].get("content-length", "0"))
                if len(rest) >= length:
                    return data
            chunk = await stream.receive_some(65536)
            assert chunk, f"connection closed after {data!r}"
            data += chunk


async def hold_body(gw: Running, size: int) -> trio.SocketStream:
    """A connection that declared a `size`-byte body and sent only its first bytes."""
    stream = await connect(gw)
    head = request_head("/v1/responses", gw.key, f"content-length: {size}\r\n")
    await stream.send_all(head + padded(size)[:10])
    return stream


async def refused_once_charged(gw: Running) -> tuple[bytes, bool]:
    """A small body sent (on a new connection each time) until the gateway refuses it:
    while the held bodies' heads are not read yet it is served (200) and its charge
    given back; once they are, the budget is full. Untimed: no guess at how long the
    server takes to read two heads (load only delays the first refusal)."""
    head = request_head(
        "/v1/responses", gw.key, f"content-length: {len(OK_BODY)}\r\nconnection: close\r\n"
    )
    with trio.fail_after(60):  # a hang guard: the budget is never charged
        while True:
            probe = await connect(gw)
            async with probe:
                await probe.send_all(head + OK_BODY)
                data, closed = await read_until_closed(probe, seconds=30)
            if response_of(data)[0] != 200:
                return data, closed
            await trio.sleep(0.02)


async def test_bodies_in_flight_are_bounded_across_connections(patient_gateway: Running) -> None:
    gateway = patient_gateway
    first = await hold_body(gateway, MAX_BODY)
    second = await hold_body(gateway, MAX_BODY)
    async with first, second:
        # The budget (two full bodies) is taken, once both heads are read: a third body
        # is refused at once.
        data, closed = await refused_once_charged(gateway)
        status, headers, err = response_of(data)
        assert status == 503, data
        assert headers["retry-after"] == "1"
        assert headers["connection"] == "close"
        assert err["error"]["code"] == "service_unavailable", err  # type: ignore[index]
        assert closed
        # A chunked body is charged as it arrives: refused as well.
        chunked = await connect(gateway)
        async with chunked:
            head = request_head("/v1/responses", gateway.key, "transfer-encoding: chunked\r\n")
            await chunked.send_all(head + f"{len(OK_BODY):x}\r\n".encode() + OK_BODY + b"\r\n0\r\n\r\n")
            data, _ = await read_until_closed(chunked, seconds=30)
        assert response_of(data)[0] == 503, data
        # Requests without a body are not charged.
        async with gateway.client() as client:
            models = await client.get("/v1/models")
        assert models.status_code == 200
        # The first body completes and is served; its charge is given back.
        await first.send_all(padded(MAX_BODY)[10:])
        data = await read_response(first)
        assert response_of(data)[0] == 200, data
    # Both held connections are gone now (closed by us): the whole budget is free again.
    async with gateway.client() as client:
        rs = [await client.post("/v1/responses", content=padded(MAX_BODY)) for _ in range(3)]
    assert [r.status_code for r in rs] == [200, 200, 200], [r.text for r in rs]


async def test_a_stream_longer_than_the_header_timeout_is_not_cut(gateway: Running) -> None:
    body = {
        "model": "mock-fast",
        "input": "one two three four five six",
        "metadata": {"mock_scenario": "chunk_delay_ms=400"},
    }
    async with gateway.client() as client:
        started = trio.current_time()
        async with client.stream("POST", "/v1/responses/stream", json=body) as r:
            text = "".join([chunk async for chunk in r.aiter_text()])
        elapsed = trio.current_time() - started
    assert r.status_code == 200
    assert elapsed > HEADER_TIMEOUT * 2, elapsed
    assert "response.completed" in text, text[-500:]


def test_the_limits_come_from_file_environment_and_flags(tmp_path: Path) -> None:
    from adapters.config.loader import load_settings
    from adapters.config.values import ConfigError
    from server.cli import _parser, _with_limit_flags

    cfg = tmp_path / "umg.toml"
    cfg.write_text("[limits]\nheader_timeout_seconds = 20\nbody_timeout_seconds = 9\n")
    default = load_settings({}).limits
    assert (default.header_timeout_seconds, default.body_timeout_seconds) == (75.0, 30.0)
    assert default.body_budget_bytes == 32 * 1024 * 1024
    env = {"UMG_CONFIG": str(cfg), "UMG_BODY_TIMEOUT_SECONDS": "5"}
    settings = load_settings(env)
    assert settings.limits.header_timeout_seconds == 20.0  # the file
    assert settings.limits.body_timeout_seconds == 5.0  # the environment beats the file
    args = _parser().parse_args(["serve", "--body-timeout", "2", "--body-budget-bytes", "8388608"])
    flagged = _with_limit_flags(settings, args).limits
    assert (flagged.body_timeout_seconds, flagged.body_budget_bytes) == (2.0, 8388608)
    assert flagged.header_timeout_seconds == 20.0
    with pytest.raises(ConfigError, match="body_budget_bytes"):
        load_settings({"UMG_BODY_BUDGET_BYTES": "1024"})  # below max_body_bytes
    with pytest.raises(ConfigError, match="body_timeout_seconds"):
        load_settings({"UMG_BODY_TIMEOUT_SECONDS": "0"})
