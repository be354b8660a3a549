"""The provider interface every adapter implements, and the one error type they raise.

Owns: the contract between the gateway's request runner and a provider. A provider turns
a `GatewayRequest` for one `Deployment` into a `Completion` (whole answer) or an async
stream of `StreamEvent`s, and turns every failure (transport or provider) into a
`ProviderError` carrying a core `FailureKind`. What to do about a failure (retry, fall
back, fail) is decided by `core.attempts`, never here.

Rules:
- Closing the stream (``aclose()``, or cancellation) closes the upstream connection.
- A stream always ends with exactly one `StreamEnd` when it completes normally; a
  stream that stops without one raised `ProviderError(STREAM_CUT)` instead.
- `UsageReport`s are cumulative; the last one is the call's usage.
- Messages never contain credentials.
- A provider may also give its stream read by read (`ReadsStreams.stream_reads`): the
  same events, grouped as each upstream read completed them (never an empty group, never
  a group held back across reads). The request driver relays such a group in one client
  write; for a provider without it each event is its own group.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from attrs import frozen

from core.catalog import Deployment
from core.model import Completion, FailureKind, GatewayRequest, StreamEvent


class ProviderError(Exception):
    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"ProviderError({self.kind.value}, {self.message!r}, status={self.status})"


@frozen
class Timeouts:
    """Seconds. `first_byte`: until response headers; `idle`: between stream chunks."""

    connect: float = 10.0
    first_byte: float = 60.0
    idle: float = 60.0
    total: float = 600.0


class Provider(Protocol):
    name: str

    async def complete(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> Completion: ...

    def stream(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> AsyncIterator[StreamEvent]: ...


class ReadsStreams(Protocol):
    """A provider whose stream can also be read group by group (see the module rules)."""

    def stream_reads(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> AsyncIterator[list[StreamEvent]]: ...
