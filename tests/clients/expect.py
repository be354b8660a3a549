"""What every client test sends and what the Mock answers (adapters/providers/mock.py).

- A plain prompt gets "Mock answer from <upstream model>: <the prompt's words>".
- A prompt saying "use tool" with the weather tool gets one call to `get_weather` with the
  minimal arguments of its schema, `{"city": ""}`; the tool result then gets text.
- Structured output with the `City` schema gets its minimal instance.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

OPENAI_MODEL = "gpt-4.1"
CLAUDE = "claude-sonnet-4"
PROMPT = "say hello to the gateway"
TOOL_PROMPT = "use tool to get the weather in Paris"
CITY_ARGS = {"city": ""}
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "The city"}},
    "required": ["city"],
}


class City(BaseModel):
    name: str
    population: int


CITY = City(name="", population=0)


def is_mock_answer(text: object, prompt: str = PROMPT) -> bool:
    return isinstance(text, str) and text.startswith("Mock answer from ") and text.endswith(prompt)
