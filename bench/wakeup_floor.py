"""Instructions per relayed read with nothing of the gateway in it: what a read's wake-up costs.

Owns: a pacer (this process, not counted) that sends `--reads` small chunks `--gap` ms
apart over TCP to a reader served under `valgrind --tool=callgrind` (bench/callgrind.py),
which relays each read to /dev/null one of these ways (`--variants`):

- `raw`: no Trio: a level-triggered `select.epoll`, `poll()`, `os.read`, `os.write`;
- `flat`: Trio's `wait_readable`, `os.read`, `os.write`, in the run's main task;
- `deep`: the same loop under 12 awaiting coroutines (each read resumes through them);
- `layered`: the loop as ours reads (a consumer 12 coroutines deep, an async generator,
  a class with `__anext__`, a receive coroutine, then `wait_readable`);
- `reactor`: Trio waits on a level-triggered `select.epoll` of the socket (registered
  once) and `poll(0)` says what to read;
- `flat5`, `reactor5`: five sockets whose chunks the pacer sends together, as a busy
  process's streams come (`stream16` served: ~4.9 tasks woken per I/O wait that wakes
  any): five tasks each waiting on its own socket as `flat`, or one `reactor` epoll of
  all five; the figure is per read of any one socket;
- `client`: the gateway's own upstream client and stream decoding (`stream_reads` of
  adapters/providers/streaming.py, OpenAI chat chunks over HTTP/1.1 chunked SSE from
  the pacer), read as the request driver's relay loop reads it (`__anext__`; or, for
  reads that have them, `wait` and `take` apart after the first, as branch
  `relay-apart` tried), the events dropped: with `--path DIR` another checkout's (its
  modules first on `sys.path`), for a before/after pair.

Each variant is counted twice, with `--reads` and with `--reads` + `--more` chunks; the
difference per extra read is the figure (the interpreter's start and imports cancel out).

`python -m bench.wakeup_floor [--variants raw,flat,deep,layered,reactor,flat5,reactor5,client] [--reads 100]
[--more 500] [--gap 4] [--path DIR]`
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from bench import callgrind

CHUNK = b"data: " + b'{"choices":[{"delta":{"content":"hello"}}]}' + b"\n\n"
DEPTH = 12
_EVENT = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":0,"model":"m",'
          b'"choices":[{"index":0,"delta":{"content":"hello "},"finish_reason":null}]}\n\n')
_LAST = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":0,"model":"m",'
         b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _serve_sse(listener: socket.socket, reads: int, gap: float) -> None:
    """The upstream of `client`: one streamed answer of `reads` chunks, `gap` s apart."""
    conn, _ = listener.accept()
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        got = b""
        while b"\r\n\r\n" not in got:
            got += conn.recv(65536)
        head, _, body = got.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        while len(body) < length:
            body += conn.recv(65536)
        conn.sendall(_HEAD + _chunk(_EVENT))
        for _ in range(reads - 2):
            time.sleep(gap)
            conn.sendall(_chunk(_EVENT))
        time.sleep(gap)
        conn.sendall(_chunk(_LAST) + b"0\r\n\r\n")
        conn.recv(1)  # until the reader closes


async def _client(port: int, reads: int) -> None:
    from adapters.providers import base, openai_codec
    from adapters.providers.streaming import stream_reads
    from adapters.providers.transport import H11Transport

    transport = H11Transport()
    stream: Any = stream_reads(
        transport, "openai", f"http://127.0.0.1:{port}/v1/chat/completions", {}, {"stream": True},
        timeouts=base.Timeouts(), secrets=(), events=openai_codec.ChunkDecoder(require_done=True),
    )
    try:
        read: list[Any] | None = await stream.__anext__()
        if hasattr(stream, "take"):
            while read is not None:
                while True:
                    await stream.wait()
                    read = stream.take()
                    if read is None or read:
                        break
        else:
            following = stream.__anext__
            while read is not None:
                try:
                    read = await following()
                except StopAsyncIteration:
                    read = None
    finally:
        await stream.aclose()
        await transport.aclose()


def _pace(listener: socket.socket, reads: int, gap: float) -> None:
    conn, _ = listener.accept()
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.recv(1)  # the reader is ready
        for _ in range(reads):
            conn.sendall(CHUNK)
            time.sleep(gap)


SOCKETS = 5


def _pace_together(listener: socket.socket, reads: int, gap: float) -> None:
    conns = [listener.accept()[0] for _ in range(SOCKETS)]
    for conn in conns:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.recv(1)  # the reader is ready
    for _ in range(reads):
        for conn in conns:
            conn.sendall(CHUNK)
        time.sleep(gap)
    for conn in conns:
        conn.close()


async def _flat_together(fds: list[int], out: int, reads: int) -> None:
    async with trio.open_nursery() as nursery:
        for fd in fds:
            nursery.start_soon(_loop, fd, out, reads)


async def _reactor_together(fds: list[int], out: int, reads: int) -> None:
    ep = select.epoll()
    for fd in fds:
        ep.register(fd, select.EPOLLIN)
    left = reads * len(CHUNK) * len(fds)
    while left > 0:
        await trio.lowlevel.wait_readable(ep.fileno())
        for ready, _ in ep.poll(0):
            left -= os.write(out, os.read(ready, 65536))


def _raw(fd: int, out: int, reads: int) -> None:
    ep = select.epoll()
    ep.register(fd, select.EPOLLIN)
    left = reads * len(CHUNK)
    while left > 0:
        ep.poll()
        left -= os.write(out, os.read(fd, 65536))


async def _loop(fd: int, out: int, reads: int) -> None:
    wait = trio.lowlevel.wait_readable
    left = reads * len(CHUNK)
    while left > 0:
        await wait(fd)
        left -= os.write(out, os.read(fd, 65536))


async def _nest(depth: int, fd: int, out: int, reads: int) -> None:
    if depth:
        return await _nest(depth - 1, fd, out, reads)
    return await _loop(fd, out, reads)


class _Chunks:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        return await self._receive()

    async def _receive(self) -> bytes:
        await trio.lowlevel.wait_readable(self.fd)
        return os.read(self.fd, 65536)


async def _events(fd: int) -> AsyncIterator[bytes]:
    async for chunk in _Chunks(fd):
        yield chunk


async def _consume(depth: int, fd: int, out: int, reads: int) -> None:
    if depth:
        return await _consume(depth - 1, fd, out, reads)
    left = reads * len(CHUNK)
    events = _events(fd)
    async for chunk in events:
        left -= os.write(out, chunk)
        if left <= 0:
            break
    await events.aclose()  # type: ignore[attr-defined]


async def _reactor(fd: int, out: int, reads: int) -> None:
    ep = select.epoll()
    ep.register(fd, select.EPOLLIN)
    left = reads * len(CHUNK)
    while left > 0:
        await trio.lowlevel.wait_readable(ep.fileno())
        for ready, _ in ep.poll(0):
            left -= os.write(out, os.read(ready, 65536))


def reader(variant: str, port: int, reads: int) -> None:
    if variant == "client":
        trio.run(_client, port, reads)
        return
    if variant in ("flat5", "reactor5"):
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(SOCKETS)]
        out = os.open(os.devnull, os.O_WRONLY)
        for sock in socks:
            sock.setblocking(False)
            sock.send(b"!")
        fds = [sock.fileno() for sock in socks]
        trio.run(_flat_together if variant == "flat5" else _reactor_together, fds, out, reads)
        return
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    fd = sock.fileno()
    out = os.open(os.devnull, os.O_WRONLY)
    sock.send(b"!")
    if variant == "raw":
        _raw(fd, out, reads)
        return
    if variant == "flat":
        trio.run(_loop, fd, out, reads)
    elif variant == "deep":
        trio.run(_nest, DEPTH, fd, out, reads)
    elif variant == "layered":
        trio.run(_consume, DEPTH, fd, out, reads)
    elif variant == "reactor":
        trio.run(_reactor, fd, out, reads)
    else:
        raise SystemExit(f"unknown variant {variant}")


def _counted(variant: str, reads: int, gap: float, tmp: Path, path: Path | None) -> int:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    pace = {"client": _serve_sse, "flat5": _pace_together, "reactor5": _pace_together}.get(variant, _pace)
    pacer = threading.Thread(target=pace, args=(listener, reads, gap), daemon=True)
    pacer.start()
    try:
        command = [sys.executable, "-m", "bench.wakeup_floor", "--serve", variant, "--port", str(port),
                   "--reads", str(reads)]
        if path is not None:
            command[1:1] = ["-c", _FROM.format(path=str(path.resolve()), here=str(Path(__file__).parent.parent))]
            command.remove("-m")
            command.remove("bench.wakeup_floor")
        return callgrind.count(command, tmp / f"{variant}-{reads}.callgrind", cwd=Path.cwd())
    finally:
        pacer.join()
        listener.close()


# another checkout's modules first; this file's own `reader` (loaded by path: the other
# checkout may not have it)
_FROM = """
import sys, runpy
sys.path.insert(0, {path!r})
sys.argv = ["wakeup_floor"] + sys.argv[1:]
runpy.run_path({here!r} + "/bench/wakeup_floor.py", run_name="__main__")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="raw,flat,deep,layered,reactor")
    parser.add_argument("--reads", type=int, default=100)
    parser.add_argument("--more", type=int, default=500)
    parser.add_argument("--gap", type=float, default=4.0, help="ms between the pacer's chunks")
    parser.add_argument("--path", type=Path, help="client: the checkout whose modules are read")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        reader(args.serve, args.port, args.reads)
        return
    with tempfile.TemporaryDirectory(prefix="umg-wakeup-") as tmp:
        for variant in args.variants.split(","):
            few = _counted(variant, args.reads, args.gap / 1000, Path(tmp), args.path)
            many = _counted(variant, args.reads + args.more, args.gap / 1000, Path(tmp), args.path)
            per = args.more * (SOCKETS if variant.endswith("5") else 1)
            print(f"{variant:8} {(many - few) / per:10,.0f} instructions per read", flush=True)


if __name__ == "__main__":
    main()
