"""The OpenAI provider over the Responses API (`[providers.openai] api = "responses"`).

Owns: the Responses endpoint and its auth header; the field mapping lives in
`openai_responses_codec`, failure mapping in `failures`, plumbing in `streaming`.

Rules:
- `base_url` includes the API version, as OpenAI's does (`https://api.openai.com/v1`);
  requests go to `{base_url}/responses`, always with `store: false`.
- The key goes only into the `authorization` header; it is never in a message, a log
  line or a repr (upstream text is redacted of it), and `repr(provider)` omits it.
- A stream ends at `response.completed` / `response.incomplete`; EOF before either is
  STREAM_CUT. A 200 answer whose status is `failed` is a ProviderError by its code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from functools import partial

from adapters.providers import openai_responses_codec
from adapters.providers.base import Timeouts
from adapters.providers.streaming import WallClock, call_json, stream_events, utc_now
from adapters.providers.transport import Transport
from core.catalog import Deployment
from core.model import Completion, GatewayRequest, StreamEvent


class OpenAIResponsesProvider:
    def __init__(
        self, *, base_url: str = "https://api.openai.com/v1", api_key: str,
        transport: Transport, name: str = "openai", wall: WallClock = utc_now,
    ) -> None:
        self.name = name
        self._url = base_url.rstrip("/") + "/responses"
        self._api_key = api_key
        self._transport = transport
        self._wall = wall

    def __repr__(self) -> str:
        return f"OpenAIResponsesProvider(name={self.name!r}, url={self._url!r})"

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"}

    async def complete(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> Completion:
        body = openai_responses_codec.encode_request(deployment, request, stream=False)
        decode = partial(
            openai_responses_codec.decode_response, provider=self.name, secrets=(self._api_key,)
        )
        return await call_json(
            self._transport, self.name, self._url, self._headers(), body,
            timeouts=timeouts, secrets=(self._api_key,), decode=decode, wall=self._wall,
        )

    async def stream(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> AsyncIterator[StreamEvent]:
        body = openai_responses_codec.encode_request(deployment, request, stream=True)
        events = openai_responses_codec.EventDecoder(self.name, secrets=(self._api_key,))
        upstream = stream_events(
            self._transport, self.name, self._url, self._headers(), body,
            timeouts=timeouts, secrets=(self._api_key,), events=events, wall=self._wall,
        )
        async with aclosing(upstream):  # our aclose() closes the upstream at once
            async for event in upstream:
                yield event
