"""API keys: minting, hashing and checking.

Owns: the shape of a gateway key and how it is verified. A key looks like
`umg_live_<prefix>_<secret>`: the type marker `umg_live_` makes it recognizable to secret
scanners, the 12-character prefix (60 random bits, base32) is a unique indexed lookup
value that may be shown in listings, and the secret carries 160 random bits. Only the
SHA-256 of the whole key is stored; comparison is constant-time. The plain key exists
once, when it is created, and is never logged or stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

MARKER = "umg_live_"
PREFIX_LEN = 12


def _b32(nbytes: int) -> str:
    return base64.b32encode(secrets.token_bytes(nbytes)).decode().rstrip("=").lower()


def mint() -> tuple[str, str, str]:
    """A new key: (plain key, lookup prefix, sha256 hex of the plain key)."""
    prefix = _b32(10)[:PREFIX_LEN]
    key = f"{MARKER}{prefix}_{_b32(20)}"
    return key, prefix, hash_key(key)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def prefix_of(key: str) -> str | None:
    """The lookup prefix of a well-formed key, or None if it cannot be one of ours."""
    if not key.startswith(MARKER):
        return None
    prefix, sep, secret = key[len(MARKER) :].partition("_")
    if not sep or len(prefix) != PREFIX_LEN or not secret:
        return None
    return prefix


def matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key), stored_hash)
