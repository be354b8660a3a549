"""Throughput runs with wrk: a fixed duration at a fixed concurrency, parsed.

Owns: running wrk (on the load generator's core, which it inherits) with `bench/post.lua` and reading its
report: requests completed, requests/s, p50 latency, errors (socket errors and non-2xx),
and, when asked, how many answers were complete streams.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from attrs import frozen

HERE = Path(__file__).resolve().parent
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@frozen
class WrkResult:
    requests: int
    seconds: float
    req_s: float
    p50_ms: float
    errors: int
    checked: int = 0  # answers read by the check (with `check=True`)
    complete: int = 0  # of those, complete SSE streams


def available() -> bool:
    return shutil.which("wrk") is not None


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse(report: str) -> WrkResult:
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", report)
    if done is None:
        raise RuntimeError(f"unreadable wrk report:\n{report}")
    p50 = re.search(r"^\s+50%\s+(\S+)", report, re.MULTILINE)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", report))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", report)
    checked = re.search(r"answers checked: (\d+) complete: (\d+)", report)
    requests = int(done.group(1))
    seconds = _ms(done.group(2) + done.group(3)) / 1000
    return WrkResult(
        requests=requests,
        seconds=seconds,
        req_s=requests / seconds if seconds else 0.0,
        p50_ms=_ms(p50.group(1)) if p50 else float("nan"),
        errors=errors + (int(non_2xx.group(1)) if non_2xx else 0),
        checked=int(checked.group(1)) if checked else 0,
        complete=int(checked.group(2)) if checked else 0,
    )


def _args(url: str, body_file: Path, headers: dict[str, str], connections: int, seconds: float) -> list[str]:
    return ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "30s",
            "-s", str(HERE / "post.lua"), url, "--", str(body_file),
            *(f"{name}: {value}" for name, value in headers.items())]


def run(urls: tuple[str, ...], body_file: Path, headers: dict[str, str], *, connections: int,
        seconds: float, check: bool = False) -> WrkResult:
    """`connections` split evenly over `urls` (one wrk each, all at once), results summed.
    `check`: read every answer and count the complete streams (costs the client some CPU)."""
    share = max(1, connections // len(urls))
    env = {**os.environ, "UMG_BENCH_CHECK": "1" if check else "0"}
    procs = [subprocess.Popen(_args(url, body_file, headers, share, seconds), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for url in urls]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {err.strip()}")
        results.append(parse(out))
    return WrkResult(
        requests=sum(r.requests for r in results),
        seconds=max(r.seconds for r in results),
        req_s=sum(r.req_s for r in results),
        p50_ms=sum(r.p50_ms for r in results) / len(results),
        errors=sum(r.errors for r in results),
        checked=sum(r.checked for r in results),
        complete=sum(r.complete for r in results),
    )
