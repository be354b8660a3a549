"""Where the gateway's time goes: a summary of py-spy's raw (collapsed-stack) samples.

Owns: reading `py-spy record --format raw` output (one line per distinct stack:
`frame;frame;...;frame count`, outermost first) and attributing every sample to one part
of the stack, in two views (see PARTS). `python -m bench.profile FILE` prints the shares by part, then the
functions with the most samples of their own (self time) and, among the gateway's own
functions, those with the most samples under them (inclusive).

Idle threads are left out (`idle`): py-spy, even without `--idle`, records a thread that
waits in a lock (Trio's cached worker threads waiting for their next job, a `threading`
wait) and stacks with no Python frame at all; counted, they made the thread hops look
dearer and every other share smaller. The summary says how many it left out. The main
thread waiting in epoll stays in: that is the process being idle or waiting for I/O.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+)(?::\d+)?\)$")

# (part, patterns on the frame's file path, a layer?), the first match wins for a frame.
# Two views: by the innermost frame of any part ("what runs"), and by the innermost frame
# of a layer, trio, h11, JSON and the stdlib being transparent ("who asked for it").
PARTS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("Quart / Werkzeug (request, response, routing)", ("/quart/", "/quart_trio/", "/werkzeug/"), True),
    ("Hypercorn (server, protocol)", ("/hypercorn/",), True),
    ("h11 (HTTP parsing and framing)", ("/h11/",), False),
    ("provider HTTP client (adapters/providers/http11, httpx)",
     ("/adapters/providers/http11", "/httpx/", "/httpcore/", "/anyio/"), True),
    ("waiting in epoll (idle or I/O wait)", ("_io_epoll.py",), True),
    ("trio threads (to_thread, from_thread, thread cache)", ("trio/_threads", "trio/to_thread", "_thread_cache"), False),
    ("trio (scheduler, sockets, cancel scopes)", ("/trio/",), False),
    ("SQLite (sqlite3 and storage adapter)", ("/sqlite3/", "/adapters/storage/"), True),
    ("Postgres (psycopg)", ("/psycopg", "/psycopg_pool/"), True),
    ("JSON (json, cattrs)", ("/json/", "/cattrs/", "/cattr/"), False),
    ("logging", ("/logging/",), True),
    # py-spy names OpenTelemetry's files without the package ("sdk/trace/__init__.py" is
    # "trace/__init__.py"), and its OTLP exporter posts with requests and urllib3
    ("telemetry (OpenTelemetry, its exporter)",
     ("/opentelemetry/", "/trace/__init__.py", "/trace/sampling.py", "/trace/export/", "/_shared_internal/",
      "/attributes/__init__.py", "/trace_exporter/", "/trace_encoder/", "/contextvars_context.py",
      "/propagation/", "/google/protobuf/", "/requests/", "/urllib3/", "/adapters/trace_spans.py",
      "/adapters/tracing.py"), True),
    ("telemetry (request log, metrics)",
     ("/adapters/request_log.py", "/adapters/metrics.py", "/adapters/telemetry.py", "/prometheus_client/"), True),
    ("attrs", ("/attr/", "/attrs/"), False),
    ("gateway: core/", ("/core/",), True),
    ("gateway: adapters/", ("/adapters/",), True),
    ("gateway: server/", ("/server/",), True),
    ("ssl, socket, selectors", ("/ssl.py", "/socket.py", "/selectors.py"), False),
)
OTHER = "other (stdlib, interpreter)"
NO_LAYER = "trio run loop only (scheduling, no layer on the stack)"
OURS = ("/core/", "/adapters/", "/server/")
# (function, file) of an innermost frame that means the thread is waiting, not running
IDLE: tuple[tuple[str, str], ...] = (
    ("WorkerThread._work", "_thread_cache.py"),  # a Trio worker thread waiting for a job
    ("Condition.wait", "/threading.py"),
    ("Event.wait", "/threading.py"),
    ("Thread._wait_for_tstate_lock", "/threading.py"),
    ("Thread.join", "/threading.py"),
    ("SimpleQueue.get", "/queue.py"),
    ("Queue.get", "/queue.py"),
)


def _frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for raw in stack.split(";"):
        found = _FRAME.match(raw.strip())
        if found is None:
            out.append((raw.strip(), ""))
        else:  # py-spy shortens paths ("trio/_run.py"): anchor them so "/trio/" matches
            file = found["file"]
            out.append((found["func"], file if file.startswith("/") else "/" + file))
    return out


def part_of(frames: list[tuple[str, str]], layers_only: bool = False) -> str:
    for _, file in reversed(frames):
        for part, patterns, layer in PARTS:
            if any(p in file for p in patterns) and (layer or not layers_only):
                return part
    return NO_LAYER if layers_only else OTHER


def idle(frames: list[tuple[str, str]]) -> bool:
    """A sample of a thread that was waiting (see the module docstring)."""
    if not frames or frames == [("", "")]:
        return True  # no Python frame on the thread
    func, file = frames[-1]
    return any(func == f and file.endswith(where) for f, where in IDLE)


def read(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    samples = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples.append((_frames(stack), int(count)))
    return samples


def summary(samples: list[tuple[list[tuple[str, str]], int]], top: int = 15) -> str:
    left_out = sum(n for frames, n in samples if idle(frames))
    samples = [(frames, n) for frames, n in samples if not idle(frames)]
    total = sum(n for _, n in samples) or 1
    parts: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for frames, n in samples:
        parts[part_of(frames)] += n
        layers[part_of(frames, layers_only=True)] += n
        func, file = frames[-1]
        leaves[f"{func} ({_short(file)})"] += n
        seen = set()
        for func, file in frames:
            name = f"{func} ({_short(file)})"
            if file.startswith(OURS) and name not in seen:
                seen.add(name)
                ours[name] += n
    lines = [f"{total} samples ({left_out} of idle threads left out)", "", "| part of the stack | what runs (innermost part) | who asked (innermost layer) |",
             "|---|---|---|"]
    for part in sorted({*parts, *layers}, key=lambda p: -(parts[p] + layers[p])):
        lines.append(f"| {part} | {parts[part] * 100 / total:.1f} % | {layers[part] * 100 / total:.1f} % |")
    lines += ["", "Most self time:"] + [f"  {n * 100 / total:5.1f} %  {name}" for name, n in leaves.most_common(top)]
    lines += ["", "The gateway's own functions, inclusive:"]
    lines += [f"  {n * 100 / total:5.1f} %  {name}" for name, n in ours.most_common(top)]
    return "\n".join(lines)


def _short(file: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "lib/python3.12/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file.lstrip("/")


if __name__ == "__main__":
    print(summary(read(Path(sys.argv[1]))))
