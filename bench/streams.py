"""Many concurrent streams at once, each on its own connection, with a bound on time.

Owns: the slow-stream scenario's client. `count` streams start together; each opens a
connection, sends the POST and reads raw bytes until the chunked body's terminator, so
the client costs little per relayed chunk (no HTTP parser per event). A stream counts as
complete if it got a 200 and its body ends with `data: [DONE]`; whatever has not ended
by `deadline` seconds counts as incomplete. Times include the connect; `first_byte` is to the response's
first byte (its head).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import trio
from attrs import define, field

_END = b"\r\n0\r\n\r\n"
_DONE = b"data: [DONE]"
_NET_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


@define
class StreamTimings:
    first_byte: list[float] = field(factory=list)
    total: list[float] = field(factory=list)
    complete: int = 0
    errors: int = 0
    elapsed: float = 0.0


def _request(url: str, body: bytes, headers: dict[str, str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [f"POST {parts.path} HTTP/1.1", f"host: {host}:{port}", "content-type: application/json",
             f"content-length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def run_streams(url: str, body: bytes, headers: dict[str, str], *, count: int,
                      deadline: float) -> StreamTimings:
    host, port, request = _request(url, body, headers)
    timings = StreamTimings()

    async def one() -> None:
        start = trio.current_time()
        first: float | None = None
        tail = b""
        head = b""
        try:
            sock = trio.socket.socket()  # not open_tcp_stream: its happy-eyeballs machinery
            await sock.connect((host, port))  # cost 0.7 ms per connect on a busy core
            async with trio.SocketStream(sock) as stream:
                await stream.send_all(request)
                while not tail.endswith(_END):
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    if first is None:
                        first, head = trio.current_time() - start, data[:12]
                    tail = (tail + data)[-256:]
        except _NET_ERRORS:
            timings.errors += 1
            return
        timings.total.append(trio.current_time() - start)
        timings.first_byte.append(first if first is not None else timings.total[-1])
        if head.startswith(b"HTTP/1.1 200") and tail.endswith(_END) and _DONE in tail:
            timings.complete += 1
        else:
            timings.errors += 1

    began = trio.current_time()
    with trio.move_on_after(deadline):
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
    timings.elapsed = trio.current_time() - began
    return timings
