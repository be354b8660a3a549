"""A small HTTP/1.1 load generator on raw trio + h11, for what wrk does not report.

Owns: sending the same POST `requests` times over `concurrency` keep-alive connections
(reopened when the server closes one after an answer) and timing each one, to the first body byte and to the end (wrk reports neither the
first byte nor exact low-concurrency percentiles). httpx is not used as the client because its throughput collapses under concurrency
(stack-notes), which would measure the client instead of the gateway.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import h11
import trio
from attrs import define, field


@define
class Timings:
    first_byte: list[float] = field(factory=list)
    total: list[float] = field(factory=list)
    errors: int = 0
    elapsed: float = 0.0


async def _one(stream: trio.SocketStream, conn: h11.Connection, request: h11.Request,
               body: bytes) -> tuple[int, float, float]:
    start = trio.current_time()
    await stream.send_all(conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
    status = 0
    first: float | None = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data) and first is None:
            first = trio.current_time() - start
        elif isinstance(event, h11.EndOfMessage):
            break
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionError("server closed the connection")
    total = trio.current_time() - start
    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
        conn.start_next_cycle()  # else the server said `connection: close`: the caller reconnects
    return status, first if first is not None else total, total


async def run_load(url: str, body: bytes, headers: dict[str, str], *, requests: int,
                   concurrency: int) -> Timings:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    all_headers = [
        ("host", f"{host}:{port}"),
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        *headers.items(),
    ]
    request = h11.Request(method="POST", target=parts.path, headers=all_headers)
    timings = Timings()
    remaining = [requests]

    async def worker() -> None:
        # A server may end a kept-alive connection after an answer (Hypercorn does after
        # `keep_alive_max_requests`, 1,000): the worker then opens a new one and goes on.
        try:
            while remaining[0] > 0:
                async with await trio.open_tcp_stream(host, port) as stream:
                    conn = h11.Connection(h11.CLIENT)
                    while remaining[0] > 0 and conn.our_state is h11.IDLE:
                        remaining[0] -= 1
                        status, first, total = await _one(stream, conn, request, body)
                        timings.errors += status != 200
                        timings.first_byte.append(first)
                        timings.total.append(total)
        except (OSError, ConnectionError, trio.BrokenResourceError, h11.ProtocolError):
            timings.errors += 1

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    timings.elapsed = trio.current_time() - start
    return timings
