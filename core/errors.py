"""One hierarchy of gateway errors, each knowing its HTTP status and OpenAI-style shape.

Owns: what a failure looks like to a client. Every error the gateway returns is a
`GatewayError`; the server maps it to `{"error": {"message", "type", "param", "code"}}`
with `status` in exactly one place (server/errors.py). Messages never contain secrets.

Rules:
- `type` follows OpenAI's vocabulary (`invalid_request_error`, `authentication_error`, ...).
- `param` names the offending request field (dotted / indexed path) when there is one.
- `retry_after` (seconds) is set on errors a client may retry later (429, 503).
"""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = "internal_error"

    def __init__(
        self, message: str, *, param: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.headers: dict[str, str] = {}  # extra response headers (x-ratelimit-*)

    def to_body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidJSON(InvalidRequest):
    code = "invalid_json"


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(InvalidRequest):
    status = 415
    code = "unsupported_media_type"


class UpgradeRequired(InvalidRequest):
    """A plain HTTP request to a WebSocket-only route."""

    status = 426
    code = "upgrade_required"


class RequestTimeout(InvalidRequest):
    """The request body did not arrive in time (answered, then the connection is closed)."""

    status = 408
    code = "request_timeout"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class Gone(GatewayError):
    """What was asked for existed but is no longer kept (an expired stream buffer)."""

    status = 410
    type = "invalid_request_error"
    code = "expired"


class UnknownModel(NotFound):
    code = "model_not_found"


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BudgetExceeded(GatewayError):
    status = 402
    type = "budget_exceeded"
    code = "budget_exceeded"


class NoRouteAvailable(GatewayError):
    """Every deployment of the model was filtered out (providers denied, over budget...)."""

    status = 400
    type = "invalid_request_error"
    code = "no_route_available"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class ContentFiltered(InvalidRequest):
    code = "content_filter"


class UpstreamError(GatewayError):
    """Every attempt at every deployment failed for reasons on the providers' side."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamRateLimited(UpstreamError):
    status = 429
    type = "rate_limit_error"
    code = "upstream_rate_limited"


class UpstreamRejected(UpstreamError):
    """The provider refused the request as invalid (its 4xx); passed on as a 400."""

    status = 400
    type = "invalid_request_error"
    code = "upstream_rejected"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


class StorageUnavailable(ServiceUnavailable):
    """The shared database cannot be reached: what needs it fails closed (a 503 with
    `retry_after`), never with a 500."""

    code = "storage_unavailable"


class StorageContention(StorageUnavailable):
    """The database is reachable but rolled back the same transaction again and again (a
    deadlock or a serialization failure each time it was rerun): a 503 with
    `retry_after`, since another try after a pause usually goes through."""

    code = "storage_contention"


class ClientClosed(GatewayError):
    """The client went away before the answer was complete (recorded, never sent)."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"
