"""The HTTP providers as data: one `HttpProvider` class, and a `Dialect` per wire format.

Owns: what differs between the HTTP providers, written down once as a `Dialect` (the
path after `base_url`, the auth headers, fixed headers, the codec's encode / decode /
stream decoder), and the one class that runs any dialect over the shared transport.
Field mappings live in the codecs (`*_codec.py`), failure mapping in `failures`, the
call plumbing in `streaming`.

Dialects (which kind of provider speaks which: `registry.DIALECTS`):
- `openai`: OpenAI Chat Completions, `{base_url}/chat/completions` with
  `authorization: Bearer {key}`; the length limit is `max_completion_tokens`; a stream
  must end with `[DONE]` (OpenAI always sends it; the usage chunk precedes it).
- `openai_compatible` (vLLM, Ollama, Groq, LM Studio, ...): the same codec with the
  leniencies such servers need: the limit is sent as `max_tokens`, the key is optional
  (no auth header without one), and a stream that ends after a finish reason without
  `[DONE]` still ends cleanly.
- `openai_responses`: OpenAI's Responses API, `{base_url}/responses`, Bearer auth,
  always `store: false`; a stream ends at `response.completed` / `response.incomplete`,
  and a 200 answer whose status is `failed` is a ProviderError by its code.
- `anthropic`: the Messages API, `{base_url}/v1/messages` with `x-api-key: {key}` and
  `anthropic-version: 2023-06-01`.
OpenAI base URLs include the version path (`https://api.openai.com/v1`,
`http://localhost:11434/v1`); Anthropic's has none (`https://api.anthropic.com`).

Rules:
- The key goes only into the dialect's auth header; it is never in a message, a log
  line or a repr (upstream text is redacted of it), and `repr(provider)` omits it.
- Closing a stream (or cancelling its consumer) closes the upstream connection.
- `propagate` (None unless tracing is on, adapters/tracing.py) gives headers to add to
  each call: the current span's `traceparent` / `tracestate`. Without it the fixed
  headers go out as they are, with no per-call work.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import urlsplit

from attrs import field, frozen

from adapters.providers import anthropic_codec, openai_codec, openai_responses_codec
from adapters.providers.base import Timeouts
from adapters.providers.streaming import (
    EventDecoder,
    WallClock,
    call_json,
    stream_events,
    stream_reads,
    utc_now,
)
from adapters.providers.transport import Transport
from core.catalog import Deployment
from core.model import Completion, GatewayRequest, StreamEvent

Secrets = tuple[str | None, ...]


class Encode(Protocol):
    def __call__(
        self, deployment: Deployment, request: GatewayRequest, *, stream: bool
    ) -> dict[str, Any]: ...


class Decode(Protocol):
    def __call__(
        self, data: Mapping[str, Any], *, provider: str, secrets: Iterable[str | None]
    ) -> Completion: ...


class Events(Protocol):
    def __call__(self, provider: str, *, secrets: Iterable[str | None]) -> EventDecoder: ...


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def x_api_key(key: str) -> dict[str, str]:
    return {"x-api-key": key}


def _without_context(decode: Callable[[Mapping[str, Any]], Completion]) -> Decode:
    """A codec decoder that needs neither the provider's name nor its secrets."""

    def run(
        data: Mapping[str, Any], *, provider: str, secrets: Iterable[str | None]
    ) -> Completion:
        del provider, secrets
        return decode(data)

    return run


@frozen
class Dialect:
    """Everything one HTTP wire format needs from a provider, as data."""

    path: str  # appended to the base URL
    auth: Callable[[str], dict[str, str]]  # key -> auth headers
    encode: Encode
    decode: Decode
    events: Events
    headers: Mapping[str, str] = field(factory=dict)  # fixed headers sent with every call
    key_required: bool = True


OPENAI_CHAT = Dialect(
    path="/chat/completions",
    auth=bearer,
    encode=partial(openai_codec.encode_request, max_tokens_field="max_completion_tokens"),
    decode=_without_context(openai_codec.decode_response),
    events=partial(openai_codec.ChunkDecoder, require_done=True),
)
OPENAI_COMPATIBLE = Dialect(
    path="/chat/completions",
    auth=bearer,
    encode=partial(openai_codec.encode_request, max_tokens_field="max_tokens"),
    decode=_without_context(openai_codec.decode_response),
    events=partial(openai_codec.ChunkDecoder, require_done=False),
    key_required=False,
)
OPENAI_RESPONSES = Dialect(
    path="/responses",
    auth=bearer,
    encode=openai_responses_codec.encode_request,
    decode=openai_responses_codec.decode_response,
    events=openai_responses_codec.EventDecoder,
)
ANTHROPIC = Dialect(
    path="/v1/messages",
    auth=x_api_key,
    encode=anthropic_codec.encode_request,
    decode=_without_context(anthropic_codec.decode_response),
    events=anthropic_codec.EventDecoder,
    headers=MappingProxyType({"anthropic-version": "2023-06-01"}),
)

class HttpProvider:
    """A `Provider` that speaks `dialect` to `base_url` over the shared transport."""

    def __init__(
        self, *, name: str, dialect: Dialect, base_url: str, api_key: str | None,
        transport: Transport, wall: WallClock = utc_now,
    ) -> None:
        self.name = name
        self.dialect = dialect
        self._url = base_url.rstrip("/") + dialect.path
        parts = urlsplit(base_url)
        self.server_address = parts.hostname or ""  # for observers (adapters/observe.py)
        self.server_port = parts.port
        self._secrets: Secrets = (api_key,)
        self._headers = {**dialect.headers, **(dialect.auth(api_key) if api_key else {})}
        self._transport = transport
        self._wall = wall
        self._decode = partial(dialect.decode, provider=name, secrets=self._secrets)
        self.propagate: Callable[[], Mapping[str, str]] | None = None

    def _call_headers(self) -> Mapping[str, str]:
        if self.propagate is None:
            return self._headers
        return {**self._headers, **self.propagate()}

    def __repr__(self) -> str:
        return f"HttpProvider(name={self.name!r}, url={self._url!r})"

    async def complete(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> Completion:
        body = self.dialect.encode(deployment, request, stream=False)
        return await call_json(
            self._transport, self.name, self._url, self._call_headers(), body,
            timeouts=timeouts, secrets=self._secrets, decode=self._decode, wall=self._wall,
        )

    def stream(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> AsyncGenerator[StreamEvent, None]:
        """`stream_events`' generator itself: its `aclose()` leaves the transport's
        context, which closes the upstream at once."""
        body = self.dialect.encode(deployment, request, stream=True)
        return stream_events(
            self._transport, self.name, self._url, self._call_headers(), body,
            timeouts=timeouts, secrets=self._secrets,
            events=self.dialect.events(self.name, secrets=self._secrets), wall=self._wall,
        )

    def stream_reads(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> AsyncGenerator[list[StreamEvent], None]:
        """The same stream read by read (`ReadsStreams`, adapters/providers/base.py):
        `stream_reads`' generator itself, no re-yielding layer per chunk."""
        body = self.dialect.encode(deployment, request, stream=True)
        return stream_reads(
            self._transport, self.name, self._url, self._call_headers(), body,
            timeouts=timeouts, secrets=self._secrets,
            events=self.dialect.events(self.name, secrets=self._secrets), wall=self._wall,
        )
