"""Where an HTTP/1.1 request goes and the head it is sent with.

Owns: `Origin` (scheme, host, port: what a pool keys its connections by), `Target` (an
origin, the request target and the Host header) and `parse_target` (an http(s) URL as
one, ValueError if not), and `Plain`, a POST head `head.py` encoded, kept with its parts
for the h11 fallback of an exchange whose response head is not plain.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import h11
from attrs import frozen


@frozen
class Plain:
    """A POST request head that `head.py` encoded (`wire`); `target` and `fields` are kept
    for the exchange's h11 fallback, should the response head not be plain."""

    wire: bytes
    target: bytes
    fields: list[tuple[bytes, bytes]]

    def as_h11(self) -> h11.Request:
        return h11.Request(method=b"POST", target=self.target, headers=self.fields)


@frozen
class Origin:
    scheme: str  # "http" | "https"
    host: str
    port: int


@frozen
class Target:
    origin: Origin
    path: bytes  # path and query, as sent on the request line
    authority: bytes  # the Host header


def parse_target(url: str) -> Target:
    """The origin, request target and Host header of an http(s) URL (ValueError if not one)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {scheme!r} (expected http or https)")
    host = parts.hostname
    if not host:
        raise ValueError("the URL has no host")
    default = 443 if scheme == "https" else 80
    port = parts.port or default
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    shown = f"[{host}]" if ":" in host else host
    authority = shown if port == default else f"{shown}:{port}"
    return Target(Origin(scheme, host, port), path.encode("ascii"), authority.encode("idna"))
