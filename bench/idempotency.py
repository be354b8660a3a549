"""What the `Idempotency-Key` layer costs a request, with and without the header.

Owns: a microbenchmark of `server/idempotent.IdempotentRoutes` in one process, no sockets:
- `without`: a POST on a hot path without the header, through the layer, against the same
  call straight to the inner app (the difference is what every ordinary request pays);
- `keyed`: a POST with a fresh key each time (claim, run, keep) and a repeat of one
  (replay), on SQLite in a temp directory, to show what a keyed request adds.
The inner app is a stub that answers a small JSON body, so only the layer is measured.

    python -m bench.idempotency [--calls N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from adapters.admin import create_key
from adapters.clock import Clock
from adapters.config.loader import load_settings
from adapters.idempotency import IdempotencyKeys
from server.idempotent import IdempotentRoutes
from server.services import build_services

BODY = b'{"model":"mock-fast","messages":[{"role":"user","content":"hello"}]}'
HEADERS = [
    (b"host", b"127.0.0.1:3000"), (b"user-agent", b"OpenAI/Python 1.99.0"),
    (b"accept", b"application/json"), (b"accept-encoding", b"gzip, deflate"),
    (b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode()),
    (b"x-stainless-lang", b"python"), (b"x-stainless-os", b"Linux"),
    (b"x-stainless-retry-count", b"0"), (b"connection", b"keep-alive"),
]


async def _inner(scope: Any, receive: Callable[[], Awaitable[Any]], send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"id":"x"}', "more_body": False})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": BODY, "more_body": False}


async def _send(message: Any) -> None:
    return None


def _scope(extra: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions",
            "headers": [*HEADERS, *extra]}


async def _per_call(app: Any, scopes: Callable[[int], dict[str, Any]], calls: int) -> float:
    """Median of 5 runs of `calls` calls, in microseconds per call."""
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for n in range(calls):
            await app(scopes(n), _receive, _send)
        runs.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(runs)


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings({"DATABASE_URL": f"sqlite:///{Path(tmp)}/bench.db", "MOCK_MODE": "true"})
        services = await build_services(settings)
        plain, _ = await create_key(services.storage, services.clock, tenant="t", project="p")
        auth = [(b"authorization", f"Bearer {plain}".encode())]
        keys = IdempotencyKeys(services.storage, Clock(), settings.idempotency)
        layer = IdempotentRoutes(_inner, services, frozenset({"/v1/chat/completions"}), keys)
        plain_scope = _scope(auth)
        direct = await _per_call(_inner, lambda n: plain_scope, calls)
        through = await _per_call(layer, lambda n: plain_scope, calls)
        print(f"without the header: inner app alone {direct:.2f} us/call,"
              f" through the layer {through:.2f} us/call (+{through - direct:.2f} us)")
        fresh = await _per_call(
            layer, lambda n: _scope([*auth, (b"idempotency-key", f"k{time.perf_counter_ns()}".encode())]),
            max(calls // 100, 20),
        )
        replay_scope = _scope([*auth, (b"idempotency-key", b"the-same")])
        replay = await _per_call(layer, lambda n: replay_scope, max(calls // 100, 20))
        print(f"with the header (SQLite): a new key {fresh:.0f} us/call, a replay {replay:.0f} us/call")
        await services.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    trio.run(main, parser.parse_args().calls)
