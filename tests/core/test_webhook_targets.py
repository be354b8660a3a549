"""`core.webhook_targets`: which webhook targets the gateway refuses (SSRF rules)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.webhook_targets import (
    Target,
    TargetPolicy,
    address_refusal,
    parse,
    refusal,
    refusal_for_url,
)

STRICT = TargetPolicy()
HTTP_OK = TargetPolicy(allow_http=True)


@pytest.mark.parametrize(
    ("address", "what"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("169.254.0.1", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("100.127.255.254", "shared (CGNAT)"),
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:10.1.2.3", "private"),
        ("192.0.2.1", "private"),  # documentation range: not global
    ],
)
def test_internal_addresses_are_refused(address: str, what: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) == f"resolves to a {what} address"


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "policy", "refused"),
    [
        ("https://hooks.example.com/x", STRICT, None),
        ("https://8.8.8.8/x", STRICT, None),
        ("http://hooks.example.com/x", STRICT, "must use https (plain http is not enabled on this gateway)"),
        ("http://hooks.example.com/x", HTTP_OK, None),
        ("ftp://hooks.example.com/x", HTTP_OK, "must be an http(s) URL"),
        ("https:///x", STRICT, "has no host"),
        ("https://h.example.com:99999/x", STRICT, "is not a valid URL"),
        ("https://localhost/x", STRICT, "must not point at localhost"),
        ("https://LocalHost./x", STRICT, "must not point at localhost"),
        ("https://api.localhost/x", STRICT, "must not point at localhost"),
        ("https://127.0.0.1:8080/x", STRICT, "resolves to a loopback address"),
        ("https://[::1]/x", STRICT, "resolves to a loopback address"),
        ("https://169.254.169.254/latest/meta-data", STRICT, "resolves to a link-local address"),
        ("https://10.0.0.1/x", STRICT, "resolves to a private address"),
        ("https://[::ffff:10.0.0.1]/x", STRICT, "resolves to a private address"),
        # the allowlist skips the address check, not the scheme rule
        ("https://127.0.0.1/x", TargetPolicy(allow_hosts=frozenset({"127.0.0.1"})), None),
        ("https://LOCALHOST/x", TargetPolicy(allow_hosts=frozenset({"localhost"})), None),
        ("https://Hooks.Internal/x", TargetPolicy(allow_hosts=frozenset({"hooks.INTERNAL"})), None),
        ("http://127.0.0.1/x", TargetPolicy(allow_hosts=frozenset({"127.0.0.1"})),
         "must use https (plain http is not enabled on this gateway)"),
        ("https://127.0.0.2/x", TargetPolicy(allow_hosts=frozenset({"127.0.0.1"})),
         "resolves to a loopback address"),
    ],
)  # fmt: skip
def test_url_rules_at_creation(url: str, policy: TargetPolicy, refused: str | None) -> None:
    assert refusal_for_url(url, policy) == refused


def test_parse_defaults_the_port() -> None:
    assert parse("https://H.example/x") == Target("https", "h.example", 443)
    assert parse("http://h.example/x") == Target("http", "h.example", 80)
    assert parse("http://h.example:8080/x") == Target("http", "h.example", 8080)


def test_delivery_checks_every_address() -> None:
    target = Target("https", "rebind.example", 443)
    public, internal = ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.0.0.1")
    assert refusal(target, [public], STRICT) is None
    assert refusal(target, [public, internal], STRICT) == "resolves to a private address"
    assert refusal(target, [internal, public], STRICT) == "resolves to a private address"
    assert refusal(target, [], STRICT) == "does not resolve to any address"
    allow = TargetPolicy(allow_hosts=frozenset({"rebind.example"}))
    assert refusal(target, [internal], allow) is None


# -- properties --------------------------------------------------------------------------

INTERNAL_V4 = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
               "100.64.0.0/10", "0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4"]  # fmt: skip
INTERNAL_V6 = ["::1/128", "fc00::/7", "fe80::/10", "ff00::/8"]


def in_network(cidr: str) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    net = ipaddress.ip_network(cidr)
    return st.integers(0, net.num_addresses - 1).map(lambda i: net[i])


internal = st.one_of([in_network(c) for c in INTERNAL_V4 + INTERNAL_V6])
v4_internal = st.one_of([in_network(c) for c in INTERNAL_V4])
any_address = st.one_of(
    st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
    st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
)


@given(internal)
def test_every_internal_address_is_refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    assert address_refusal(address) is not None


@given(v4_internal)
def test_ipv4_mapped_forms_are_judged_like_the_ipv4_address(address: ipaddress.IPv4Address) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    assert address_refusal(mapped) == address_refusal(address) is not None


@given(any_address)
def test_an_allowed_address_is_global_and_not_multicast(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    if address_refusal(address) is None:
        plain = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        checked = plain or address
        assert checked.is_global and not checked.is_multicast and not checked.is_private


@given(st.lists(any_address, min_size=1, max_size=6), st.data())
def test_one_refused_address_refuses_the_target(
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address], data: st.DataObject
) -> None:
    bad = data.draw(internal)
    spot = data.draw(st.integers(0, len(addresses)))
    target = Target("https", "h.example", 443)
    assert refusal(target, [*addresses[:spot], bad, *addresses[spot:]], STRICT) is not None
    # and the allowlist lets the same resolution through
    assert refusal(target, [bad], TargetPolicy(allow_hosts=frozenset({"H.example"}))) is None


@given(st.sampled_from(["http", "https"]), internal)
def test_a_literal_internal_url_is_refused_at_creation(
    scheme: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> None:
    host = f"[{address}]" if address.version == 6 else str(address)
    assert refusal_for_url(f"{scheme}://{host}/hook", HTTP_OK) is not None
