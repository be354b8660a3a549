"""What an installed gateway needs besides its modules ships with the package.

Owns one check: every file the code reads through `importlib.resources` at run time (the
console's page, script and style sheet, the storage migrations, the model catalog) is
matched by a `[tool.setuptools.package-data]` pattern of pyproject.toml, so a wheel or a
non-editable install carries it. A new asset folder the patterns miss fails here, not on
a user's machine with a blank console or a gateway that cannot migrate.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_SUFFIXES = (".html", ".js", ".css", ".sql", ".toml", ".png", ".svg", ".json")


def _shipped() -> set[Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns: dict[str, list[str]] = config["tool"]["setuptools"]["package-data"]
    found: set[Path] = set()
    for package, globs in patterns.items():
        base = ROOT / package.replace(".", "/")
        for pattern in globs:
            found |= {p for p in base.glob(pattern) if p.is_file()}
    return found


def _data_files() -> set[Path]:
    """Non-Python files inside the three packages (tests, docs and caches excluded)."""
    out = set()
    for package in ("core", "server", "adapters"):
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and path.suffix in DATA_SUFFIXES and "__pycache__" not in path.parts:
                out.add(path)
    return out


def test_every_data_file_of_the_packages_is_shipped() -> None:
    data = _data_files()
    names = {p.relative_to(ROOT).as_posix() for p in data}
    # the files the running gateway reads, so the walk above cannot silently find nothing
    assert {"server/static/console/index.html", "server/static/console/console.js",
            "server/static/console/console.css"} <= names
    assert any(n.startswith("adapters/storage/schema/sqlite/") and n.endswith(".sql") for n in names)
    assert any(n.startswith("adapters/storage/schema/postgres/") and n.endswith(".sql") for n in names)
    missing = sorted(p.relative_to(ROOT).as_posix() for p in data - _shipped())
    assert missing == [], f"not matched by [tool.setuptools.package-data]: {missing}"

