"""Instructions per call of one Python statement, counted by callgrind: a cut's own size.

Owns: running `--setup` then `--stmt` `--number` times in a fresh interpreter under
`valgrind --tool=callgrind`, and again with the loop run 0 times, and printing the
difference of the two totals per run of the statement (the interpreter's start, the
imports and the setup cancel out). Exact to a few instructions, unlike a served
request's count (`bench.instr_count`), which moves by about half a percent from run to
run with the scheduling of its tasks: a cut smaller than that is measured here, on the
function it changes, with the request's own values. `--path DIR` runs the statement
against another checkout (its modules first on `sys.path`), for a before/after pair.

`python -m bench.instr_snippet --setup "from core.tokens import estimate_text_tokens"
--stmt "estimate_text_tokens('notes ' * 150)" [--number 2000] [--path ../base]`
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from bench import callgrind

_RUNNER = """
import sys
sys.path.insert(0, {path!r})
{setup}
for _ in range({number}):
    {stmt}
"""


def run(setup: str, stmt: str, number: int, path: Path, tmp: Path) -> int:
    script = tmp / f"snippet-{number}.py"
    script.write_text(_RUNNER.format(path=str(path), setup=setup, number=number, stmt=stmt))
    out = tmp / f"snippet-{number}.callgrind"
    return callgrind.count([sys.executable, str(script)], out, cwd=path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup", default="")
    parser.add_argument("--stmt", required=True)
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--path", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed")
    with tempfile.TemporaryDirectory(prefix="umg-snippet-") as tmp:
        base = run(args.setup, args.stmt, 0, args.path.resolve(), Path(tmp))
        loaded = run(args.setup, args.stmt, args.number, args.path.resolve(), Path(tmp))
    print(f"{(loaded - base) / args.number:,.0f} instructions per call of: {args.stmt}")


if __name__ == "__main__":
    main()
