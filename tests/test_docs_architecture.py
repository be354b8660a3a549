"""docs/architecture.md cannot rot silently.

Checks that every module in core/ has its section in the architecture page, and that
every test the page cites as evidence for an invariant still exists in tests/:
- `test_...` names must be test functions defined somewhere under tests/;
- `Test...` names must be classes or module-level names (e.g. `TestBudgetMachine =
  BudgetMachine.TestCase`) defined under tests/;
- `Class.method` citations whose class is defined under tests/, or is named
  `...Machine` (e.g. `BudgetMachine.never_overcommitted`), must name a method of a
  class defined under tests/;
- every file the page names by its path (`adapters/jobs.py`, `tests/core/...`) exists, so
  a module split or renamed must be followed here.
"""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
CORE = ROOT / "core"
TESTS = ROOT / "tests"

_CITED_TEST = re.compile(r"`(test_\w+)`")
_CITED_CLASS = re.compile(r"`(Test\w+)`")
_CITED_METHOD = re.compile(r"`([A-Z]\w*)\.([a-z_]\w*)`")
_CITED_FILE = re.compile(
    r"(?<![\w./])((?:adapters|server|core|tests|bench)/[\w/]+\.(?:py|toml|sql))"
)


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _test_tree() -> tuple[set[str], set[str], dict[str, set[str]]]:
    """(function names, module-level and class names, methods per class) under tests/."""
    functions: set[str] = set()
    names: set[str] = set()
    methods: dict[str, set[str]] = {}
    for path in sorted(TESTS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.add(node.name)
            elif isinstance(node, ast.ClassDef):
                names.add(node.name)
                methods.setdefault(node.name, set()).update(
                    item.name
                    for item in node.body
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                )
        for node in tree.body:
            if isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return functions, names, methods


def test_every_core_module_has_a_section() -> None:
    headings = set(re.findall(r"^### (\w+)\s*$", _doc(), flags=re.MULTILINE))
    modules = sorted(p.stem for p in CORE.glob("*.py") if p.stem != "__init__")
    assert modules, "core/ has no modules"
    missing = [m for m in modules if m not in headings]
    assert missing == [], f"docs/architecture.md has no '### <module>' section for {missing}"


def test_every_cited_test_function_exists() -> None:
    cited = set(_CITED_TEST.findall(_doc()))
    assert cited, "docs/architecture.md cites no tests"
    functions, _, _ = _test_tree()
    missing = sorted(cited - functions)
    assert missing == [], f"docs/architecture.md cites tests that do not exist: {missing}"


def test_every_cited_test_class_and_invariant_exists() -> None:
    doc = _doc()
    _, names, methods = _test_tree()
    missing = sorted(set(_CITED_CLASS.findall(doc)) - names)
    for cls, method in _CITED_METHOD.findall(doc):
        # classes defined in tests/ (and any `...Machine`) are checked; names such as
        # `Gateway.record` are source references, not test citations
        known = cls in methods
        if (known and method not in methods[cls]) or (not known and cls.endswith("Machine")):
            missing.append(f"{cls}.{method}")
    assert missing == [], f"docs/architecture.md cites test names that do not exist: {missing}"


def test_every_cited_file_exists() -> None:
    cited = set(_CITED_FILE.findall(_doc()))
    assert "adapters/driver.py" in cited, "the pattern no longer finds the page's paths"
    missing = sorted(path for path in cited if not (ROOT / path).is_file())
    assert missing == [], f"docs/architecture.md names files that do not exist: {missing}"
