"""Reading a callgrind dump and counting one command's instructions: what every counting
bench script (instr_count, instr_snippet, export_cost, observer_count) shares.

Owns: `events` (every event's total in a dump: its `events:` and `totals:` lines),
`total` (the `Ir` total) and `count` (a command run to its end under callgrind, with
`PYTHONHASHSEED=0` so dict and set layouts repeat, and its total).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def events(dump: Path) -> dict[str, int]:
    names: list[str] = []
    for line in dump.read_text().splitlines():
        if line.startswith("events:"):
            names = line.split()[1:]
        elif line.startswith("totals:"):
            return dict(zip(names or ["Ir"], (int(v) for v in line.split()[1:]), strict=False))
    raise RuntimeError(f"no totals in {dump}")


def total(dump: Path) -> int:
    return events(dump)["Ir"]


def count(command: list[str], dump: Path, cwd: Path | None = None) -> int:
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}", *command],
                   check=True, capture_output=True, cwd=cwd, env={**os.environ, "PYTHONHASHSEED": "0"})
    return total(dump)
