"""The Anthropic provider: the Messages API over the shared transport.

Owns: the Anthropic endpoint and headers; the field mapping lives in `anthropic_codec`,
failure mapping in `failures`, plumbing in `streaming`.

Rules:
- `base_url` has no version path, as Anthropic's SDK (`https://api.anthropic.com`);
  requests go to `{base_url}/v1/messages` with `anthropic-version: {version}`.
- The key goes only into the `x-api-key` header; it is never in a message, a log line
  or a repr (upstream text is redacted of it), and `repr(provider)` omits it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from adapters.providers import anthropic_codec
from adapters.providers.base import Timeouts
from adapters.providers.streaming import WallClock, call_json, stream_events, utc_now
from adapters.providers.transport import Transport
from core.catalog import Deployment
from core.model import Completion, GatewayRequest, StreamEvent


class AnthropicProvider:
    def __init__(
        self, *, base_url: str = "https://api.anthropic.com", api_key: str,
        transport: Transport, name: str = "anthropic", version: str = "2023-06-01",
        wall: WallClock = utc_now,
    ) -> None:
        self.name = name
        self._url = base_url.rstrip("/") + "/v1/messages"
        self._api_key = api_key
        self._version = version
        self._transport = transport
        self._wall = wall

    def __repr__(self) -> str:
        return f"AnthropicProvider(name={self.name!r}, url={self._url!r})"

    def _headers(self) -> dict[str, str]:
        return {"x-api-key": self._api_key, "anthropic-version": self._version}

    async def complete(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> Completion:
        body = anthropic_codec.encode_request(deployment, request, stream=False)
        return await call_json(
            self._transport, self.name, self._url, self._headers(), body,
            timeouts=timeouts, secrets=(self._api_key,),
            decode=anthropic_codec.decode_response, wall=self._wall,
        )

    async def stream(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> AsyncIterator[StreamEvent]:
        body = anthropic_codec.encode_request(deployment, request, stream=True)
        events = anthropic_codec.EventDecoder(self.name, secrets=(self._api_key,))
        upstream = stream_events(
            self._transport, self.name, self._url, self._headers(), body,
            timeouts=timeouts, secrets=(self._api_key,), events=events, wall=self._wall,
        )
        async with aclosing(upstream):  # our aclose() closes the upstream at once
            async for event in upstream:
                yield event
