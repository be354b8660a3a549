"""Every snippet of docs/clients.md runs against a real gateway (mock mode): Python blocks
in this process, the bash block (the `llm` CLI) in bash, JavaScript blocks with `node` in
tests/clients/node (where the pinned packages are). The docs' `http://localhost:3000`
and `umg_live_...` are replaced with this gateway's URL and key; each snippet must print
the Mock's answers."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clients.conftest import Served
from tests.clients.test_node import NODE_DIR, node

DOC = Path(__file__).resolve().parents[2] / "docs" / "clients.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(), re.S | re.M)


def local(code: str, gateway: Served) -> str:
    return code.replace("http://localhost:3000", gateway.url).replace("umg_live_...", gateway.key)


def test_every_client_has_a_snippet() -> None:
    assert len(blocks("python")) == 7 and len(blocks("bash")) == 1 and len(blocks("js")) == 3


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_snippet(gateway: Served, index: int) -> None:
    code = local(blocks("python")[index], gateway)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"docs/clients.md python block {index}", "exec"), {"__name__": "snippet"})
    printed = out.getvalue()
    assert "Mock answer from" in printed or "population=0" in printed, printed


def test_bash_snippet(gateway: Served, tmp_path: Path) -> None:
    env = {**os.environ, "LLM_USER_PATH": str(tmp_path),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", local(blocks("bash")[0], gateway)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Mock answer from"), done.stdout


@pytest.mark.parametrize("index", range(len(blocks("js"))))
def test_js_snippet(gateway: Served, index: int) -> None:
    binary = node()
    script = NODE_DIR / f".doc-snippet-{os.getpid()}-{index}.mjs"
    script.write_text(local(blocks("js")[index], gateway))
    try:
        done = subprocess.run([binary, script.name], cwd=NODE_DIR, capture_output=True,
                              text=True, timeout=120)
    finally:
        script.unlink()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    answers = [line for line in lines if line.startswith("Mock answer from")]
    # the AI SDK warns on stdout that it sends a large max_tokens for a model it does not
    # know (the gateway clamps it; ai-sdk.mjs checks that)
    others = [line for line in lines if line not in answers and not line.startswith("AI SDK Warning")]
    assert answers and not others, done.stdout
