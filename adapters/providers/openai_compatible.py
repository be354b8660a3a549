"""An OpenAI-compatible provider (vLLM, Ollama, Groq, LM Studio, ...): a configured name,
base URL and optional key in front of the OpenAI Chat codec.

Owns: the differences from OpenAI itself, which are all leniencies:
- the length limit is sent as `max_tokens` (many servers know only that one);
- the key is optional (local servers often take none; then no auth header is sent);
- a stream that ends after a finish reason without `[DONE]` still ends cleanly.
`base_url` includes the version path (`http://localhost:11434/v1`), as with OpenAI.
"""

from __future__ import annotations

from adapters.providers.openai import OpenAIChatProvider
from adapters.providers.streaming import WallClock, utc_now
from adapters.providers.transport import Transport


class OpenAICompatibleProvider(OpenAIChatProvider):
    max_tokens_field = "max_tokens"
    require_done = False

    def __init__(
        self, *, name: str, base_url: str, api_key: str | None, transport: Transport,
        wall: WallClock = utc_now,
    ) -> None:
        super().__init__(
            name=name, base_url=base_url, api_key=api_key, transport=transport, wall=wall
        )
