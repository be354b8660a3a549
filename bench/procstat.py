"""What a process tree costs, read from /proc: CPU time and resident memory.

Owns: summing a process and all its descendants (LiteLLM's proxy and Node may run helper
processes), so that a gateway's figures include everything it started. Linux only.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def tree(pid: int) -> list[int]:
    """`pid` and every descendant alive now."""
    kids = _children()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(kids.get(current, ()))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes and their descendants so far."""
    return sum(cpu_split(pids))


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """User and system CPU time (apart) of these processes and their descendants so far."""
    user = system = 0
    for root in pids:
        for pid in tree(root):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            user += int(fields[11])  # utime
            system += int(fields[12])  # stime
    return user / _TICKS, system / _TICKS


def _status_kib(pids: list[int], field: str) -> int:
    total = 0
    for root in pids:
        for pid in tree(root):
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
    return total


def rss_mib(pids: list[int]) -> float:
    """Resident memory now, summed over the trees."""
    return _status_kib(pids, "VmRSS") / 1024


def peak_rss_mib(pids: list[int]) -> float:
    """Each process's peak resident memory (VmHWM), summed over the trees."""
    return _status_kib(pids, "VmHWM") / 1024
