"""What can go wrong in an HTTP/1.1 exchange, by phase, in words that are safe to show.

Owns: `TransportFailure` and its subclasses, one per way an exchange fails (connect,
the pool's bound, our own request refused, send, response timed out or cut; which
`FailureKind` each is lives in `failures.TRANSPORT_KINDS`), `Stale` (a pooled
connection that failed before any response byte: sent again on a fresh one), the
network exceptions an exchange turns into these (`NET_ERRORS`), and `describe`, a
network exception's short text (the SSL reason for a broken TLS stream). No text here
holds request headers or bodies.
"""

from __future__ import annotations

import trio

NET_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class TransportFailure(Exception):
    """A failure in one phase of an exchange (`what`), with a detail that is safe to show."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"{what}: {detail}")
        self.what = what
        self.detail = detail


class ConnectFailed(TransportFailure):
    """Refused, reset, unreachable, DNS or TLS handshake/verification failure."""


class ConnectTimedOut(TransportFailure):
    pass


class PoolTimedOut(TransportFailure):
    """Every connection to the origin stayed busy until the connect deadline."""


class RequestRejected(TransportFailure):
    """Our own request could not be encoded (e.g. a header value with a line break)."""


class SendFailed(TransportFailure):
    pass


class ResponseTimedOut(TransportFailure):
    pass


class ResponseCut(TransportFailure):
    """The connection ended or broke, or the server broke HTTP, before the response ended."""


class Stale(Exception):
    """The connection failed before any response byte; `failure` if it is not retried."""

    def __init__(self, failure: TransportFailure) -> None:
        super().__init__(str(failure))
        self.failure = failure


def describe(exc: BaseException) -> str:
    """A short text for a network exception (the SSL reason for a broken TLS stream)."""
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__
