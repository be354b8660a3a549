"""How a raw configuration value becomes a setting: the rules every section shares.

Owns: `ConfigError` (what a bad setting raises, named for the key or variable), the
words a true/false environment variable may be, a true/false key that a variable
overrides, and a section table whose keys must be the fields of its settings class (a
typo is an error, not silently ignored).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    pass


def boolean(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")


def flag(section: Mapping[str, Any], name: str, default: bool, env: Mapping[str, str], var: str) -> bool:
    """A true/false setting: `var` in the environment, else `name` in the section."""
    if var in env:
        return boolean(env[var], var)
    value = section.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false")
    return value


def table(file_cfg: Mapping[str, Any], name: str, allowed: Any) -> dict[str, Any]:
    """A table (`[attempts]`, `[timeouts]`, `[health]`, `[webhooks]`): keys must be fields of
    `allowed` (an attrs class), so a typo is an error rather than silently ignored."""
    section = file_cfg.get(name, {})
    if not isinstance(section, Mapping):
        raise ConfigError(f"[{name}] must be a table")
    known = {a.name for a in allowed.__attrs_attrs__}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"[{name}] has unknown keys {unknown}; known: {sorted(known)}")
    return dict(section)
