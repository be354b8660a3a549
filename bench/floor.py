"""The floor under the gateway: what Hypercorn and the upstream client cost by themselves.

Owns: two bare ASGI apps served the way `umg serve` serves (Hypercorn's Trio worker, the
same config and the same Hypercorn patches: `server/hypercorn_patch.py`), started by
`bench/targets.py` as the targets `floor-hello` and `floor-proxy`:

Served as `umg serve` serves: both sets of Hypercorn patches (`server/hypercorn_patch.py`,
then `server/hypercorn_tasks.py`) and the serving GC (`server/gc_policy.py`).

- `hello`: reads the request body and answers a fixed ~1.4 KB `chat.completion`; what
  Hypercorn, h11 and Trio cost per request, nothing of the gateway;
- `proxy`: reads the body and POSTs it as it came to the provider through the gateway's
  own upstream client (`adapters/providers/transport.py`), answering the provider's body
  unchanged: no auth, no parsing, no limits, no routing, no ledger row. A request with
  `"stream": true` is relayed as the provider's SSE body, each upstream read written to
  the client as it comes (a chunked body part each, through `send_part` as the gateway's
  streams are): the floor under a relayed stream, with no decoding, metering or framing.

Beside `ours` in one run, `ours - floor-proxy` is the CPU per request that the gateway's
own work costs (auth, parse, limits, routing, codecs, the ledger), and `floor-proxy -
floor-hello` what the provider call costs. Not a gateway: never used outside the bench.

`python -m bench.floor --port N --mode hello|proxy [--provider URL]`
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from adapters.providers.base import Timeouts
from adapters.providers.transport import H11Transport
from server import hypercorn_patch, hypercorn_tasks
from server.gc_policy import tune_for_serving

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

ANSWER = json.dumps({
    "id": "chatcmpl-floor", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "floor " * 180}}],
    "usage": {"prompt_tokens": 500, "completion_tokens": 32, "total_tokens": 532},
}).encode()


async def _body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _relay(transport: H11Transport, url: str, headers: dict[str, str], payload: Any,
                 timeouts: Timeouts, send: Send) -> None:
    async with transport.stream_post(url, headers, payload, timeouts=timeouts) as response:
        await send({"type": "http.response.start", "status": response.status,
                    "headers": [(b"content-type", b"text/event-stream")],
                    hypercorn_patch.HEAD_WITH_BODY: True})
        part = hypercorn_patch.body_part_sender(send)
        async for chunk in response.chunks:
            if part is not None:
                await part(chunk)
            else:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def app(mode: str, provider: str | None) -> Callable[[Any, Receive, Send], Awaitable[None]]:
    transport = H11Transport()
    timeouts = Timeouts()
    url = f"{provider}/v1/chat/completions"
    headers = {"authorization": "Bearer sk-bench-provider"}

    async def asgi(scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].removeprefix("lifespan.")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        body = await _body(receive)
        if mode == "hello" or scope["method"] != "POST":
            await _answer(send, 200, ANSWER)
            return
        payload = json.loads(body)
        if payload.get("stream") is True:
            await _relay(transport, url, headers, payload, timeouts, send)
            return
        answer = await transport.post_json(url, headers, payload, timeouts=timeouts)
        await _answer(send, answer.status, answer.body)

    return asgi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("hello", "proxy"), required=True)
    parser.add_argument("--provider", help="the provider's base URL (proxy)")
    args = parser.parse_args()
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = None
    config.backlog = 1024  # as server/serve.py
    hypercorn_patch.install()  # as server/serve.py: both patches, in this order
    hypercorn_tasks.install()
    tune_for_serving()  # as `umg serve` does before it serves
    trio.run(serve, app(args.mode, args.provider), config)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
