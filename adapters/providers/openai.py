"""The OpenAI provider: Chat Completions over the shared transport.

Owns: the OpenAI endpoint, its auth header, and the choice of codec options; the field
mapping lives in `openai_codec`, failure mapping in `failures`, plumbing in `streaming`.

Rules:
- `base_url` includes the API version, as OpenAI's does (`https://api.openai.com/v1`);
  requests go to `{base_url}/chat/completions`.
- The key goes only into the `authorization` header; it is never in a message, a log
  line or a repr (upstream text is redacted of it), and `repr(provider)` omits it.
- Streams require `[DONE]` (OpenAI always sends it); the usage chunk precedes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from adapters.providers import openai_codec
from adapters.providers.base import Timeouts
from adapters.providers.streaming import WallClock, call_json, stream_events, utc_now
from adapters.providers.transport import Transport
from core.catalog import Deployment
from core.model import Completion, GatewayRequest, StreamEvent


class OpenAIChatProvider:
    """Shared by OpenAI and OpenAI-compatible servers; subclasses set the options."""

    max_tokens_field = "max_completion_tokens"
    require_done = True

    def __init__(
        self, *, name: str, base_url: str, api_key: str | None, transport: Transport,
        wall: WallClock = utc_now,
    ) -> None:
        self.name = name
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key
        self._transport = transport
        self._wall = wall

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, url={self._url!r})"

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    async def complete(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> Completion:
        body = openai_codec.encode_request(
            deployment, request, stream=False, max_tokens_field=self.max_tokens_field
        )
        return await call_json(
            self._transport, self.name, self._url, self._headers(), body,
            timeouts=timeouts, secrets=(self._api_key,),
            decode=openai_codec.decode_response, wall=self._wall,
        )

    async def stream(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> AsyncIterator[StreamEvent]:
        body = openai_codec.encode_request(
            deployment, request, stream=True, max_tokens_field=self.max_tokens_field
        )
        events = openai_codec.ChunkDecoder(
            self.name, secrets=(self._api_key,), require_done=self.require_done
        )
        upstream = stream_events(
            self._transport, self.name, self._url, self._headers(), body,
            timeouts=timeouts, secrets=(self._api_key,), events=events, wall=self._wall,
        )
        async with aclosing(upstream):  # our aclose() closes the upstream at once
            async for event in upstream:
                yield event


class OpenAIProvider(OpenAIChatProvider):
    def __init__(
        self, *, base_url: str = "https://api.openai.com/v1", api_key: str,
        transport: Transport, name: str = "openai", wall: WallClock = utc_now,
    ) -> None:
        super().__init__(
            name=name, base_url=base_url, api_key=api_key, transport=transport, wall=wall
        )
