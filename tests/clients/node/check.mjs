// Shared by the client scripts: where the gateway is, what the Mock answers
// (tests/clients/expect.py says the same), and a tiny runner that reports every check
// as one JSON line on stdout ({"check", "ok", "error"?}) and exits 1 if any failed.
import assert from "node:assert/strict";

export const URL = process.env.GATEWAY_URL; // the root: http://127.0.0.1:PORT
export const KEY = process.env.GATEWAY_KEY;
export const OPENAI_MODEL = "gpt-4.1";
export const CLAUDE = "claude-sonnet-4";
export const PROMPT = "say hello to the gateway";
export const TOOL_PROMPT = "use tool to get the weather in Paris";
export const CITY_ARGS = { city: "" };
export const CITY = { name: "", population: 0 };
export const WEATHER_SCHEMA = {
  type: "object",
  properties: { city: { type: "string", description: "The city" } },
  required: ["city"],
};
export const CITY_SCHEMA = {
  type: "object",
  properties: { name: { type: "string" }, population: { type: "integer" } },
  required: ["name", "population"],
  additionalProperties: false,
};

export function isMockAnswer(text, prompt = PROMPT) {
  return typeof text === "string" && text.startsWith("Mock answer from ") && text.endsWith(prompt);
}

export function words(text) {
  return text.split(/\s+/).filter(Boolean).length;
}

export { assert };

export async function run(checks) {
  let failed = 0;
  for (const [name, fn] of Object.entries(checks)) {
    try {
      await fn();
      console.log(JSON.stringify({ check: name, ok: true }));
    } catch (err) {
      failed += 1;
      console.log(JSON.stringify({ check: name, ok: false, error: String(err?.stack ?? err) }));
    }
  }
  process.exit(failed ? 1 : 0);
}
