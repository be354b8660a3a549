"""`python -m bench.transport`: the provider transport against httpx, side by side.

Owns: one measurement of upstream-client throughput. A minimal upstream (raw trio, one
canned ~300-byte JSON answer with content-length, keep-alive) runs in its own process;
this process then sends the same JSON POST through `H11Transport.post_json` (the
gateway's transport) and through `httpx.AsyncClient` (what the gateway used before,
with the limits it had: 200 connections, 50 kept alive) at each concurrency, in
alternating rounds so that noise on a shared machine hits both alike. On a machine with
two or more cores the upstream and the client are pinned to different cores. Prints
requests/s (median over rounds) and, for the median round, the client's CPU time per
request and p50 / p99 latency.
Options: `--seconds S` per measurement, `--rounds R`, `--concurrency 1,16,64`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import httpx
import trio

from adapters.providers.base import Timeouts
from adapters.providers.transport import H11Transport, encode_json

ANSWER_BODY = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":0,"model":"m",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Echo: hello there"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,'
    b'"total_tokens":15}}'
)
ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(ANSWER_BODY)).encode() + b"\r\n\r\n" + ANSWER_BODY
)
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hello there " * 20}]}
HEADERS = {"authorization": "Bearer sk-bench-not-a-real-key"}
TIMEOUTS = Timeouts(connect=5, first_byte=10, idle=10, total=30)

Call = Callable[[], Awaitable[None]]


# ---- the upstream ------------------------------------------------------------------------


async def next_request(stream: trio.abc.ReceiveStream, buffer: bytes) -> bytes | None:
    """Read one request (head and `content-length` body) from `stream`, `buffer` holding
    what was read past the previous one; what is read past this one, or None at EOF."""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    while len(rest) < length:
        data = await stream.receive_some(65536)
        if not data:
            return None
        rest += data
    return rest[length:]


async def _serve_one(stream: trio.SocketStream) -> None:
    buffer = b""
    try:
        while (rest := await next_request(stream, buffer)) is not None:
            buffer = rest
            await stream.send_all(ANSWER)
    except trio.BrokenResourceError:
        return


async def _upstream() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=1024)
    print(listeners[0].socket.getsockname()[1], flush=True)
    await trio.serve_listeners(_serve_one, listeners)


# ---- the clients -------------------------------------------------------------------------


async def _measure(
    call: Call, concurrency: int, seconds: float
) -> tuple[float, float, list[float]]:
    """Run `call` from `concurrency` tasks for `seconds`; (requests/s, CPU s/request,
    latencies). CPU time is this process's: the client's own cost, whatever the load."""
    latencies: list[float] = []
    cpu = time.process_time()
    stop_at = trio.current_time() + seconds

    async def worker() -> None:
        while trio.current_time() < stop_at:
            start = trio.current_time()
            await call()
            latencies.append(trio.current_time() - start)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    elapsed = trio.current_time() - start
    cpu = time.process_time() - cpu
    return len(latencies) / elapsed, cpu / max(1, len(latencies)), latencies


def _h11_call(transport: H11Transport, url: str) -> Call:
    async def call() -> None:
        answer = await transport.post_json(url, HEADERS, REQUEST, timeouts=TIMEOUTS)
        assert answer.status == 200 and answer.body == ANSWER_BODY

    return call


def _httpx_call(client: httpx.AsyncClient, url: str) -> Call:
    async def call() -> None:
        headers = {"content-type": "application/json", "accept": "application/json", **HEADERS}
        answer = await client.post(url, content=encode_json(REQUEST), headers=headers)
        assert answer.status_code == 200 and answer.content == ANSWER_BODY

    return call


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(url: str, concurrencies: list[int], rounds: int, seconds: float) -> None:
    transport = H11Transport()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=30)
    timeout = httpx.Timeout(connect=5, read=10, write=10, pool=5)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        clients = {"h11 transport": _h11_call(transport, url), "httpx": _httpx_call(client, url)}
        for call in clients.values():  # warm up: connections, imports, caches
            await _measure(call, max(concurrencies), 0.3)
        print(f"{'client':<15} {'c':>3} {'req/s':>8} {'CPU ms/req':>10} {'p50 ms':>8} "
              f"{'p99 ms':>8}  req/s per round")
        for concurrency in concurrencies:
            results: dict[str, list[tuple[float, float, list[float]]]] = {n: [] for n in clients}
            for _ in range(rounds):
                for name, call in clients.items():
                    results[name].append(await _measure(call, concurrency, seconds))
            for name, runs in results.items():
                rates = [rate for rate, _, _ in runs]
                median = statistics.median(rates)
                _, cpu, latencies = min(runs, key=lambda run: abs(run[0] - median))
                print(
                    f"{name:<15} {concurrency:>3} {median:>8,.0f} {cpu * 1000:>10.3f} "
                    f"{_pct(latencies, 0.5) * 1000:>8.2f} {_pct(latencies, 0.99) * 1000:>8.2f}  "
                    + " ".join(f"{r:,.0f}" for r in rates),
                    flush=True,
                )
    await transport.aclose()


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[core]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _pin(1)
        trio.run(_upstream)
        return
    upstream = subprocess.Popen(
        [sys.executable, "-m", "bench.transport", "--serve"], stdout=subprocess.PIPE
    )
    try:
        assert upstream.stdout is not None
        port = int(upstream.stdout.readline())
        _pin(0)
        concurrencies = [int(c) for c in args.concurrency.split(",")]
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        trio.run(_run, url, concurrencies, args.rounds, args.seconds)
    finally:
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    main()
