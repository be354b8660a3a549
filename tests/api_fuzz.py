"""schemathesis over the gateway's /openapi.json as served: `make fuzz-api`, and its short run.

Owns: starting a real `umg serve` (mock mode, a fresh SQLite database in a temporary
directory, port 0), minting a key with `umg keys create`, and running `schemathesis run`
against `URL/openapi.json` with every check (`--checks all`), positive and negative cases
(`--mode all`) and the repository's `schemathesis.toml`. The run passes when schemathesis
exits 0 (no server error, no schema, status, content-type or header violation, no
accepted invalid or rejected valid request) and it generated at least `--min-cases` test
cases. The gateway is stopped with SIGTERM afterwards and must exit 0.

Run: `python -m tests.api_fuzz [--examples N] [--min-cases M] [--seed S] [--phases P]`.
The short run in `make test` skips the coverage phase (a fixed ~2,000 deterministic
cases, most of the time); `make fuzz-api` runs every phase.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LISTENING = re.compile(r"^Listening on (http://\S+)", re.M)
GENERATED = re.compile(r"(\d+) generated")
SCRUB = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "UMG_CONFIG", "PORT", "HOST")


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB and "proxy" not in k.lower()}
    return {**env, "DATABASE_URL": f"sqlite:///{tmp}/fuzz.db", "MOCK_MODE": "true",
            "NO_PROXY": "*", "LOG_LEVEL": "warning"}


def run(
    examples: int, min_cases: int, seed: int, phases: str = "examples,coverage,fuzzing,stateful"
) -> tuple[int, str]:
    """(exit status, schemathesis's output); 0 only when every condition above holds."""
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        env = _env(tmp)
        made = subprocess.run(
            [BIN / "umg", "keys", "create", "--tenant", "fuzz", "--project", "fuzz", "--json"],
            env=env, capture_output=True, text=True, check=True,
        )
        key = json.loads(made.stdout)["key"]
        out = tmp / "serve.out"
        with out.open("w") as sink:
            server = subprocess.Popen(
                [BIN / "umg", "serve", "--port", "0"], env=env, stdout=sink,
                stderr=subprocess.DEVNULL,
            )
        try:
            url = _wait_for_url(out, server)
            fuzz = subprocess.run(
                [BIN / "schemathesis", "--config-file", str(ROOT / "schemathesis.toml"), "run",
                 f"{url}/openapi.json", "--checks", "all", "--mode", "all",
                 "--max-examples", str(examples), "--seed", str(seed), "--phases", phases,
                 # one worker: CPython 3.11's parser is not thread-safe under Hypothesis
                 "--workers", "1",
                 "--header", f"Authorization: Bearer {key}", "--no-color"],
                env=env, cwd=tmp, capture_output=True, text=True, check=False,  # its cache: tmp
            )
        finally:
            server.send_signal(signal.SIGTERM)
            stopped = server.wait(timeout=30)
        report = fuzz.stdout + fuzz.stderr
        found = GENERATED.findall(report)
        cases = int(found[-1]) if found else 0
        if fuzz.returncode != 0:
            return fuzz.returncode, report
        if cases < min_cases:
            return 1, report + f"\nonly {cases} test cases generated; at least {min_cases} wanted\n"
        if stopped != 0:
            return 1, report + f"\nthe gateway exited {stopped} after the run\n"
        return 0, report


def _wait_for_url(out: Path, server: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = LISTENING.search(out.read_text())
        if found:
            return found.group(1)
        if server.poll() is not None:
            raise RuntimeError(f"umg serve exited {server.returncode}: {out.read_text()}")
        time.sleep(0.05)
    raise TimeoutError("umg serve did not print its address")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.api_fuzz")
    parser.add_argument("--examples", type=int, default=200, help="test cases per operation")
    parser.add_argument("--min-cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    args = parser.parse_args(argv)
    status, report = run(args.examples, args.min_cases, args.seed, args.phases)
    print(report)
    return status


if __name__ == "__main__":
    sys.exit(main())
