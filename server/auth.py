"""Who is calling: the API key on an HTTP request or a WebSocket handshake.

Owns: where keys are accepted. HTTP: `Authorization: Bearer <key>` or `x-api-key`.
WebSocket (browsers cannot set headers there): the same headers, or the subprotocol
`umg-key.<key>` in `Sec-WebSocket-Protocol` (offer `umg` too and the server answers `umg`;
else it echoes the key protocol, as RFC 6455 allows only an offered one),
or, as a last resort, `?api_key=<key>` in the URL (may end up in proxy logs; prefer the
subprotocol). Verification itself is `Gateway.authenticate`; `require_admin` also asks for
an admin key (403 otherwise).
"""

from __future__ import annotations

from quart import websocket

from adapters.storage.records import KeyRecord
from core.errors import PermissionDenied
from server.http import api_key_from_headers
from server.services import Services

WS_KEY_PROTOCOL = "umg-key."


async def require_key(services: Services) -> KeyRecord:
    return await services.gateway.authenticate(api_key_from_headers())


def websocket_key() -> tuple[str | None, bool]:
    """(key, via_subprotocol) for the current WebSocket handshake."""
    auth = websocket.headers.get("authorization")
    if auth and auth.lower().startswith("bearer "):
        return auth[7:].strip(), False
    if websocket.headers.get("x-api-key"):
        return websocket.headers["x-api-key"], False
    for proto in websocket.requested_subprotocols:
        if proto.startswith(WS_KEY_PROTOCOL):
            return proto[len(WS_KEY_PROTOCOL) :], True
    return websocket.args.get("api_key"), False


async def require_admin(services: Services) -> KeyRecord:
    """The caller's key, which must be an admin key (a tenant key gets 403)."""
    key = await require_key(services)
    if not key.admin:
        raise PermissionDenied(
            "This route needs an admin key (umg keys create --admin); a tenant key cannot use it"
        )
    return key
