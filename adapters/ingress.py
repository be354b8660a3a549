"""What goes into a run: one request as it reached the gateway, and the gateway's ids.

Owns: `Ingress` (plain values, no framework objects: what every surface hands the
driver, adapters/driver.py), `ChecksRequests` (a provider that refuses some requests
before any call) and `new_id`, the random ids of requests, rows and jobs. Importable
from adapters/driver.py as well, where the surfaces take them.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Literal, Protocol, runtime_checkable

from attrs import frozen

from adapters.afterwards import Afterwards
from adapters.execution import Execution
from adapters.stopwatch import Stopwatch
from adapters.storage.records import KeyRecord
from core.model import GatewayRequest


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@frozen
class Ingress:
    """One request as it reached the gateway: plain values, no framework objects.

    `parse` reads the body into a request (it raises GatewayError for bad input; it runs
    after authentication, so an authenticated caller's bad request is recorded). Give
    `key` when the caller is known already (jobs, an open WebSocket), else `token`.
    `tracked`: the run is in the shutdown registry (jobs are not: their lease survives).
    `watch`: told the request's record once its ledger row is written (what it cost, how
    it ended), e.g. by the idempotency layer deciding whether the answer is kept.
    For observers (adapters/observe.py): `client_request_id`, the id the client sees
    (default: `request_id`); `trace_headers`, the incoming `traceparent` / `tracestate`;
    `stopwatch`, started when the request reached the gateway (default: by `open`), which
    the run keeps (adapters/stopwatch.py: the gateway's overhead).
    `afterwards`: where the run's end leaves what follows its ledger row (the observers
    told it finished, the tokens-per-minute correction) for the surface to do after the
    answer's last byte (adapters/afterwards.py); None: the end does it at once.
    """

    request_id: str
    endpoint: str
    parse: Callable[[], Awaitable[GatewayRequest]]
    token: str | None = None
    key: KeyRecord | None = None
    outside_cancel: Literal["client_gone", "canceled"] = "client_gone"
    tracked: bool = True
    watch: Callable[[Execution], None] | None = None
    client_request_id: str | None = None
    trace_headers: Mapping[str, str] = MappingProxyType({})
    stopwatch: Stopwatch | None = None
    afterwards: Afterwards | None = None


@runtime_checkable
class ChecksRequests(Protocol):
    """A provider that refuses some requests before any call (a 4xx, recorded)."""

    def check_request(self, request: GatewayRequest) -> None: ...
