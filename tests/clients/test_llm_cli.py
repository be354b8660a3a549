"""Simon Willison's `llm` CLI against the gateway, configured as its users do: an
`extra-openai-models.yaml` naming the gateway's `/v1` (Chat Completions, and with
`responses: true` the Responses API) and a stored key. Plain with usage (`-u`),
streamed (the default), a tool round trip (`--functions`) and structured output
(`--schema`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clients.conftest import Served
from tests.clients.expect import OPENAI_MODEL, PROMPT, TOOL_PROMPT, is_mock_answer

LLM = str(Path(sys.executable).parent / "llm")
MODELS = ("umg-chat", "umg-responses")
FUNCTIONS = '''
def get_weather(city: str) -> str:
    "The weather in a city."
    return "sunny"
'''


@pytest.fixture(scope="module")
def user_dir(gateway: Served, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("llm")
    entries = [
        f"- model_id: {model_id}\n  model_name: {OPENAI_MODEL}\n  api_base: {gateway.v1}\n"
        f"  api_key_name: umg\n  supports_tools: true\n  supports_schema: true\n{extra}"
        for model_id, extra in (("umg-chat", ""), ("umg-responses", "  responses: true\n"))
    ]
    (path / "extra-openai-models.yaml").write_text("".join(entries))
    (path / "keys.json").write_text(json.dumps({"umg": gateway.key}))
    return path


def llm(user_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLM_USER_PATH": str(user_dir)}
    env.pop("OPENAI_API_KEY", None)
    done = subprocess.run([LLM, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.parametrize("model", MODELS)
def test_plain_usage_and_stream(user_dir: Path, model: str) -> None:
    plain = llm(user_dir, "-m", model, "--no-stream", "-u", PROMPT)
    answer = plain.stdout.strip()
    assert is_mock_answer(answer)
    assert f"{len(answer.split())} output" in plain.stderr  # "Token usage: N input, M output"
    assert is_mock_answer(llm(user_dir, "-m", model, PROMPT).stdout.strip())


@pytest.mark.parametrize("model", MODELS)
def test_tool_round_trip(user_dir: Path, model: str) -> None:
    done = llm(user_dir, "-m", model, "--functions", FUNCTIONS, "--td", TOOL_PROMPT)
    assert "get_weather" in done.stdout + done.stderr and "sunny" in done.stdout + done.stderr
    assert done.stdout.strip().endswith(TOOL_PROMPT)


@pytest.mark.parametrize("model", MODELS)
def test_structured_output(user_dir: Path, model: str) -> None:
    done = llm(user_dir, "-m", model, "--schema", "name, population int", "a city")
    assert json.loads(done.stdout) == {"name": "", "population": 0}
