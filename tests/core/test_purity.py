"""core/ stays pure: every import is from the standard library's pure modules, attrs or core."""

import ast
import pathlib

CORE = pathlib.Path(__file__).resolve().parents[2] / "core"
ALLOWED = {
    "__future__", "abc", "attrs", "bisect", "collections", "core", "dataclasses", "datetime",
    "decimal", "enum", "functools", "hashlib", "heapq", "hmac", "base64", "itertools", "json",
    "math", "operator", "re", "statistics", "string", "tomllib", "types", "typing",
    "unicodedata", "fractions", "codecs", "ipaddress",
    "urllib.parse",  # only this module of urllib (string parsing; urllib.request is I/O)
}


def _imports(path: pathlib.Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_core_imports_only_pure_modules() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert files, "core/ has no modules"
    bad = [
        f"{f.relative_to(CORE.parent)} imports {name}"
        for f in files
        for name in _imports(f)
        if name not in ALLOWED and name.split(".")[0] not in ALLOWED
    ]
    assert bad == []


def test_every_core_module_opens_with_what_it_owns() -> None:
    for f in sorted(CORE.rglob("*.py")):
        doc = ast.get_docstring(ast.parse(f.read_text()))
        assert doc, f"{f.name} has no module docstring saying what it owns"
