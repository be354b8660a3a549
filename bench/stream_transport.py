"""`python -m bench.stream_transport`: the CPU a relayed stream costs the upstream client.

Owns: one measurement of reading streamed answers through `H11Transport.stream_post`.
A minimal upstream (raw trio, its own process, pinned to the other core) answers every
POST with a chunked SSE body of `--chunks` events, each written by itself `--gap` ms
apart (so each read carries one chunk, as with a real provider); a client process reads
`--streams` of them at `--concurrency` and reports its CPU time per stream. With
`--compare DIR` a second client runs the same loop against the transport of another
checkout (`DIR`'s `adapters` package first on the path), in alternating rounds, so both
are measured side by side in one run; the table shows medians and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import trio

from bench.transport import next_request

ROOT = Path(__file__).resolve().parent.parent
EVENT = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"word "},"finish_reason":null}]}\n\n'
)


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[core]})


async def _serve_one(stream: trio.abc.Stream, chunks: int, gap: float) -> None:
    buffer = b""
    frame = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)
    done = b"data: [DONE]\n\n"
    try:
        while (rest := await next_request(stream, buffer)) is not None:
            buffer = rest
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            for _ in range(chunks):
                await trio.sleep(gap)
                await stream.send_all(frame)
            await stream.send_all(b"%x\r\n%s\r\n" % (len(done), done))
            await stream.send_all(b"0\r\n\r\n")
    except trio.BrokenResourceError:
        return


async def _upstream(chunks: int, gap: float) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=1024)
    print(listeners[0].socket.getsockname()[1], flush=True)

    async def serve(stream: trio.SocketStream) -> None:
        await _serve_one(stream, chunks, gap)

    await trio.serve_listeners(serve, listeners)


async def _client(url: str, streams: int, concurrency: int) -> None:
    from adapters.providers.base import Timeouts
    from adapters.providers.transport import H11Transport

    timeouts = Timeouts(connect=5, first_byte=10, idle=10, total=60)
    transport = H11Transport()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    left = [streams]

    async def one() -> None:
        async with transport.stream_post(url, {}, body, timeouts=timeouts) as response:
            assert response.status == 200
            async for _ in response.chunks:
                pass

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await one()

    for _ in range(concurrency):  # warm up: one stream per connection
        await one()
    cpu = time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    print(f"{(time.process_time() - cpu) / streams * 1000:.4f}", flush=True)
    await transport.aclose()


def _run_client(source: Path, url: str, args: argparse.Namespace) -> float:
    env = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{ROOT}"}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--client", url,
         "--streams", str(args.streams), "--concurrency", str(args.concurrency)],
        env=env, capture_output=True, text=True, check=True, cwd=source,
    )
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--gap", type=float, default=1.0, help="ms between chunks")
    parser.add_argument("--streams", type=int, default=800)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compare", type=Path)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _pin(1)
        trio.run(_upstream, args.chunks, args.gap / 1000)
        return
    if args.client:
        _pin(0)
        trio.run(_client, args.client, args.streams, args.concurrency)
        return
    upstream = subprocess.Popen(
        [sys.executable, "-m", "bench.stream_transport", "--serve", "--chunks", str(args.chunks),
         "--gap", str(args.gap)], stdout=subprocess.PIPE, cwd=ROOT,
    )
    try:
        assert upstream.stdout is not None
        url = f"http://127.0.0.1:{int(upstream.stdout.readline())}/v1/chat/completions"
        sources = {"this checkout": ROOT}
        if args.compare is not None:
            sources = {"before": args.compare.resolve(), **sources}
        results: dict[str, list[float]] = {name: [] for name in sources}
        for _ in range(args.rounds):
            for name, source in sources.items():
                results[name].append(_run_client(source, url, args))
        medians = {name: statistics.median(values) for name, values in results.items()}
        print(f"{args.chunks} chunks {args.gap} ms apart, {args.streams} streams at c={args.concurrency}, "
              f"load average {os.getloadavg()[0]:.1f}")
        for name, values in results.items():
            print(f"{name:<15} CPU ms/stream {medians[name]:.3f}  rounds "
                  + " ".join(f"{v:.3f}" for v in values))
        if args.compare is not None:
            print(f"ratio this / before: {medians['this checkout'] / medians['before']:.2f}x")
    finally:
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    main()
