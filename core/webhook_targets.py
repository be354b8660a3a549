"""Where a webhook may be delivered: the rule that keeps tenants off internal addresses.

Owns: the decision, for a webhook URL's scheme and host and the addresses its host
resolves to, whether the gateway may POST there (SSRF protection). Pure: the caller
parses, resolves and connects; this module only judges.

- The scheme must be `https`; `http` only when the operator allows it (`allow_http`).
- A host on the operator's allowlist (`allow_hosts`, exact, case-insensitive) skips the
  address check (that is how a deployment reaches its own internal receivers).
- Otherwise every address the host stands for must be public: loopback, private
  (RFC 1918, fc00::/7), link-local (169.254/16 with the cloud metadata address,
  fe80::/10), unspecified, multicast, reserved, shared (CGNAT 100.64/10) and other
  non-global addresses are refused, as are IPv4-mapped IPv6 forms of them. `localhost`
  (and names under `.localhost`) is refused by name, before any resolution.

`refusal_for_url` is the check at job creation (a literal address or `localhost` is
refused then); `refusal` is the full check at delivery, once the host is resolved.
Each returns the reason for refusing, or `None` when the target is allowed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from attrs import field, frozen

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _lowered(hosts: Iterable[str]) -> frozenset[str]:
    return frozenset(h.strip().lower() for h in hosts if h.strip())


@frozen
class TargetPolicy:
    allow_hosts: frozenset[str] = field(default=frozenset(), converter=_lowered)
    allow_http: bool = False


@frozen
class Target:
    scheme: str  # lower case
    host: str  # lower case, IPv6 without brackets
    port: int


_CGNAT = ipaddress.ip_network("100.64.0.0/10")

# (what it is, the test), first match names the refusal
_REFUSED: tuple[tuple[str, Callable[[Address], bool]], ...] = (
    ("unspecified", lambda a: a.is_unspecified),
    ("loopback", lambda a: a.is_loopback),
    ("link-local", lambda a: a.is_link_local),
    ("multicast", lambda a: a.is_multicast),
    ("shared (CGNAT)", lambda a: isinstance(a, ipaddress.IPv4Address) and a in _CGNAT),
    ("reserved", lambda a: a.is_reserved),
    ("private", lambda a: a.is_private),
    ("not global", lambda a: not a.is_global),
)


def parse(url: str) -> Target | str:
    """The URL's scheme, host and port, or the reason it is not a usable webhook URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return "must be an http(s) URL"
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return "has no host"
    return Target(scheme, host.lower(), port or (443 if scheme == "https" else 80))


def address_refusal(address: Address) -> str | None:
    """Why `address` must not be a webhook target, or `None` when it is public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for what, test in _REFUSED:
        if test(address):
            return f"resolves to a {what} address"
    return None


def literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _by_name(target: Target, policy: TargetPolicy) -> tuple[bool, str | None]:
    """(allowlisted, refusal) from what the URL alone shows."""
    if target.scheme == "http" and not policy.allow_http:
        return False, "must use https (plain http is not enabled on this gateway)"
    if target.host in policy.allow_hosts:
        return True, None
    if target.host == "localhost" or target.host.endswith(".localhost"):
        return False, "must not point at localhost"
    address = literal(target.host)
    return False, address_refusal(address) if address is not None else None


def refusal_for_url(url: str, policy: TargetPolicy) -> str | None:
    """At job creation: the reason `url` is refused as far as it shows without DNS."""
    target = parse(url)
    if isinstance(target, str):
        return target
    return _by_name(target, policy)[1]


def is_allowlisted(target: Target, policy: TargetPolicy) -> bool:
    return target.host in policy.allow_hosts


def refusal(target: Target, addresses: Iterable[Address], policy: TargetPolicy) -> str | None:
    """At delivery: the reason `target`, whose host resolved to `addresses`, is refused.
    Every address must pass (an empty resolution is refused too)."""
    allowlisted, reason = _by_name(target, policy)
    if allowlisted or reason is not None:
        return reason
    found = list(addresses)
    if not found:
        return "does not resolve to any address"
    for address in found:
        why = address_refusal(address)
        if why is not None:
            return why
    return None
