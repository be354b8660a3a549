"""The core's shared vocabulary: the normalized request, messages, usage and stream events.

Owns: the provider-neutral shapes every other module speaks. Wire formats (OpenAI chat,
Anthropic messages, Responses) are translated to and from these values at the edges
(server/wire and adapters/providers); nothing here knows any wire format.

Rules:
- Every value is a frozen attrs class; collections are tuples (or frozensets).
- Money is never here; it lives in `billing` and `budget` as Decimal.
- Free-form JSON the gateway passes through untouched (tool parameter schemas,
  response_format) is kept as `JSONValue` and never interpreted by the core.
- `passthrough` (on a request and on a tool) holds fields of one wire family that have no
  neutral meaning, keyed by family (`PASSTHROUGH_FAMILIES`): a provider speaking that
  family sends them as they came; every other provider drops them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from decimal import Decimal
from typing import Literal, TypeAlias

from attrs import field, frozen

JSONValue: TypeAlias = (
    None | bool | int | float | str | list["JSONValue"] | Mapping[str, "JSONValue"]
)

Role = Literal["system", "user", "assistant", "tool"]

# Wire families a field can be passed through to: Anthropic Messages, OpenAI Chat
# Completions (also OpenAI-compatible servers), OpenAI Responses.
PASSTHROUGH_FAMILIES = ("anthropic", "openai_chat", "openai_responses")
PassThrough: TypeAlias = Mapping[str, Mapping[str, JSONValue]]


@frozen
class TextPart:
    text: str


@frozen
class ImagePart:
    """An image by URL; `url` may be an https URL or a `data:` URL with base64 bytes."""

    url: str
    detail: str | None = None


Part: TypeAlias = TextPart | ImagePart


@frozen
class ToolCall:
    """A tool call the model made; `arguments` is the JSON text exactly as produced."""

    id: str
    name: str
    arguments: str


@frozen
class Message:
    role: Role
    content: tuple[Part, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # set on role "tool": which call this answers
    name: str | None = None

    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


@frozen(eq=True, hash=False)
class Tool:
    name: str
    description: str | None = None
    parameters: JSONValue = None  # JSON Schema, passed through
    passthrough: PassThrough = field(factory=dict)  # family -> extra tool fields


@frozen
class ToolChoice:
    """`mode` is auto | none | required | tool; `name` is set only when mode is tool."""

    mode: Literal["auto", "none", "required", "tool"]
    name: str | None = None


Strategy = Literal["cost", "latency", "reliability", "weighted"]
STRATEGIES: tuple[Strategy, ...] = ("cost", "latency", "reliability", "weighted")


@frozen
class RoutingConstraints:
    strategy: Strategy = "cost"
    allow_providers: frozenset[str] | None = None  # None: every provider allowed
    deny_providers: frozenset[str] = frozenset()


@frozen(eq=True, hash=False)
class GatewayRequest:
    """One model request, whatever wire format it came in."""

    model: str
    messages: tuple[Message, ...]
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: JSONValue = None  # OpenAI-style {"type": ...}, passed through
    stream: bool = False
    routing: RoutingConstraints = field(factory=RoutingConstraints)
    max_cost_usd: Decimal | None = None
    metadata: Mapping[str, str] = field(factory=dict)
    user: str | None = None
    passthrough: PassThrough = field(factory=dict)  # family -> extra top-level fields


@frozen
class Usage:
    """Token counts of one call. `input_tokens` excludes cached and cache-write tokens."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0  # read from a prompt cache (cheaper)
    cache_write_tokens: int = 0  # written to a prompt cache (Anthropic; dearer)
    reasoning_tokens: int = 0  # included in output_tokens, reported separately

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        return self.total_input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )


NO_USAGE = Usage()  # no tokens: one shared value (immutable), not one made per default



FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@frozen
class Completion:
    """A whole (non-streamed) answer from a provider."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()
    upstream_model: str | None = None
    upstream_id: str | None = None


# ---- stream events: what a provider's stream is decoded into -------------------------


@frozen
class TextDelta:
    text: str


@frozen
class ToolCallDelta:
    """A piece of tool call `index`; `id` and `name` come on the first piece only."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@frozen
class UsageReport:
    """Usage as known so far; later reports replace earlier ones (they are cumulative)."""

    usage: Usage


@frozen
class StreamEnd:
    finish_reason: FinishReason


StreamEvent: TypeAlias = TextDelta | ToolCallDelta | UsageReport | StreamEnd


class FailureKind(enum.Enum):
    """Why a provider call failed; the attempt machine decides what each one means."""

    TIMEOUT = "timeout"
    CONNECT = "connect_error"
    RATE_LIMITED = "rate_limited"  # 429
    SERVER_ERROR = "server_error"  # 5xx
    OVERLOADED = "overloaded"  # 529 / 503 overloaded
    STREAM_CUT = "stream_cut"  # connection dropped or malformed mid-stream
    BAD_REQUEST = "bad_request"  # 400, 404, 409, 413, 422: the request is wrong
    AUTH = "auth"  # 401, 403: the gateway's provider key is wrong
    CONTEXT_LENGTH = "context_length_exceeded"
    CONTENT_FILTER = "content_filter"


RETRYABLE_KINDS: frozenset[FailureKind] = frozenset(
    {
        FailureKind.TIMEOUT,
        FailureKind.CONNECT,
        FailureKind.RATE_LIMITED,
        FailureKind.SERVER_ERROR,
        FailureKind.OVERLOADED,
        FailureKind.STREAM_CUT,
    }
)
