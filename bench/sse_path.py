"""`python -m bench.sse_path`: the CPU one relayed chat chunk costs in the SSE layers.

Owns: two in-process timings, per chunk: decoding one upstream chunk (an OpenAI
`chat.completion.chunk` as one SSE event: `SSEStreamDecoder` + the chat codec's
`ChunkDecoder`, down to a `TextDelta`), and framing one `TextDelta` for the client
(`ChatFramer.event`, the bytes of one SSE event). With `--compare DIR` the same timings
run against another checkout's code (its packages first on the path) in alternating
rounds, in separate processes, and the table shows the medians side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHUNK = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"word "},'
    b'"logprobs":null,"finish_reason":null}]}\n\n'
)


def _timings(n: int) -> tuple[float, float]:
    from adapters.execution import Execution
    from adapters.providers.openai_codec import ChunkDecoder
    from adapters.providers.streaming import SSEStreamDecoder
    from adapters.storage.records import KeyRecord
    from core.model import GatewayRequest, Message, TextDelta
    from server.routes.chat import ChatFramer

    decoder = SSEStreamDecoder(ChunkDecoder())
    started = time.process_time()
    for _ in range(n):
        (event,) = decoder.feed(CHUNK)
    decode = (time.process_time() - started) / n
    assert event == TextDelta("word ")

    key = KeyRecord(id="k", prefix="p", secret_hash="0" * 64, tenant="t", project="p", name=None,
                    rpm=None, tpm=None, budget_usd=None, budget_period="month",
                    created_at=datetime(2026, 1, 1, tzinfo=UTC), revoked_at=None)
    request = GatewayRequest(model="gpt-4o-mini", messages=(Message(role="user"),))
    exe = Execution(request_id="req_bench", key=key, request=request, endpoint="chat.completions",
                    started=0.0)
    framer = ChatFramer(exe, 1700000000, True, "req-client")
    delta = TextDelta("word ")
    started = time.process_time()
    for _ in range(n):
        frame = framer.event(exe, delta)
    encode = (time.process_time() - started) / n
    assert frame.startswith(b"data: {")
    return decode, encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compare", type=Path)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        decode, encode = _timings(args.chunks)
        print(f"{decode * 1e6:.3f} {encode * 1e6:.3f}")
        return
    sources = {"this checkout": ROOT}
    if args.compare is not None:
        sources = {"before": args.compare.resolve(), **sources}
    seen: dict[str, list[tuple[float, float]]] = {name: [] for name in sources}
    for _ in range(args.rounds):
        for name, source in sources.items():
            env = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{ROOT}"}
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one",
                                  "--chunks", str(args.chunks)], env=env, cwd=source,
                                 capture_output=True, text=True, check=True)
            decode, encode = (float(v) for v in out.stdout.split())
            seen[name].append((decode, encode))
    print(f"per chunk, µs CPU (median of {args.rounds} rounds of {args.chunks:,}), "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, values in seen.items():
        decode = statistics.median(d for d, _ in values)
        encode = statistics.median(e for _, e in values)
        print(f"{name:<15} decode {decode:7.2f}  frame {encode:7.2f}  both {decode + encode:7.2f}")


if __name__ == "__main__":
    main()
