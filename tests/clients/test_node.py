"""The Node clients (tests/clients/node: the `openai` and `@anthropic-ai/sdk` SDKs, and the
AI SDK with `@ai-sdk/openai` and `@ai-sdk/anthropic`) against the gateway, one `node`
process per client. Each script prints one JSON line per check; every expected check
must be there and pass.

`make test` installs the pinned packages (`npm ci`) with the machine's Node and npm.
Without Node, or without the installed packages, these tests skip, unless `CI` is set:
then they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.clients.conftest import Served

NODE_DIR = Path(__file__).parent / "node"
SURFACES = ("chat", "responses", "anthropic")
AI_SDK_CHECKS = [
    f"{surface}_{check}"
    for surface in SURFACES
    for check in ("generate_usage", "stream_usage", "tool_round_trip", "streamed_tool_round_trip",
                  "structured")
]
CHECKS = {
    "openai.mjs": [
        "chat_plain_usage", "chat_stream_usage", "chat_tool_round_trip", "chat_structured",
        "responses_plain_usage", "responses_stream", "responses_tool_round_trip",
        "responses_structured",
    ],
    "anthropic.mjs": [
        "plain_usage", "stream", "tool_round_trip", "structured", "count_tokens_and_models",
    ],
    "ai-sdk.mjs": [*AI_SDK_CHECKS, "anthropic_max_tokens_clamped"],
}


def node() -> str:
    """The `node` binary with the suite's packages installed, or skip (fail under CI)."""
    found = shutil.which("node")
    problem = None
    if found is None:
        problem = "Node.js is not installed (the Node client tests need node and npm)"
    elif not (NODE_DIR / "node_modules" / ".package-lock.json").exists():
        problem = "tests/clients/node has no node_modules: run `make test` (it runs npm ci)"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    assert found is not None
    return found


def run_script(gateway: Served, script: str) -> dict[str, dict[str, object]]:
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", ""),
        "GATEWAY_URL": gateway.url, "GATEWAY_KEY": gateway.key,
    }
    done = subprocess.run(
        [node(), script], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=300,
    )
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result["check"]] = result
    assert results, f"{script} reported nothing:\n{done.stdout}\n{done.stderr}"
    return results


@pytest.mark.parametrize("script", sorted(CHECKS))
def test_node_client(gateway: Served, script: str) -> None:
    results = run_script(gateway, script)
    failed = {name: r.get("error") for name, r in results.items() if not r["ok"]}
    assert not failed, json.dumps(failed, indent=1)
    assert sorted(results) == sorted(CHECKS[script])
