"""Query parameters: one strict reader for every route that takes them.

Owns: how `?name=value` pairs become values. A route lists the names it knows; then:
- an unknown name, or a name given twice, is a 400 naming it;
- every value is plain text: no control characters (NUL included, which Postgres cannot
  hold), at most 256 characters (an escape that is not UTF-8, such as `%ED%A0%80`, stays
  as those nine characters: Werkzeug keeps it percent-encoded);
- an integer is ASCII digits only (`str.isdigit` accepts `²`, `int` does not), within
  the route's range; a choice is one of the route's words.
Every failure is `InvalidRequest(param=<name>)`, so it reaches the client as a 400 in
the OpenAI error shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from werkzeug.datastructures import MultiDict

from core.errors import InvalidRequest

MAX_VALUE = 256
_DIGITS = re.compile(r"[0-9]{1,9}")
_BAD_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


class Query:
    """The query parameters of one request, checked against the names a route knows."""

    def __init__(self, args: MultiDict[str, str], known: Iterable[str]) -> None:
        allowed = tuple(known)
        self._values: dict[str, str] = {}
        for name in args:
            if name not in allowed:
                listed = ", ".join(allowed) or "none"
                raise InvalidRequest(
                    f"Unknown query parameter '{name}' (this route takes: {listed})", param=name
                )
            values = args.getlist(name)
            if len(values) > 1:
                raise InvalidRequest(f"Query parameter '{name}' is given more than once", param=name)
            self._values[name] = _plain(name, values[0])

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def text(self, name: str) -> str | None:
        return self._values.get(name)

    def integer(self, name: str, *, default: int, minimum: int, maximum: int) -> int:
        raw = self._values.get(name)
        if raw is None:
            return default
        if not _DIGITS.fullmatch(raw) or not minimum <= int(raw) <= maximum:
            raise InvalidRequest(
                f"'{name}' must be an integer from {minimum} to {maximum}, got {raw!r}", param=name
            )
        return int(raw)

    def choice(self, name: str, choices: Iterable[str]) -> str | None:
        raw = self._values.get(name)
        options = tuple(choices)
        if raw is not None and raw not in options:
            raise InvalidRequest(
                f"'{name}' must be one of {', '.join(options)}, got {raw!r}", param=name
            )
        return raw


def _plain(name: str, value: str) -> str:
    if len(value) > MAX_VALUE:
        raise InvalidRequest(f"'{name}' may be at most {MAX_VALUE} characters long", param=name)
    if _BAD_CHARACTER.search(value):
        raise InvalidRequest(
            f"'{name}' holds a control character (such as %00)", param=name
        )
    return value
