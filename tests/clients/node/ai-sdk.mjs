// The Vercel AI SDK (`ai`) with `@ai-sdk/openai` (`.chat()` and Responses) and
// `@ai-sdk/anthropic` (base URL: /v1): generateText (usage), streamText, a tool round trip
// (also streamed: the Anthropic provider adds eager_input_streaming to every tool then),
// and structured output with generateObject.
import { createAnthropic } from "@ai-sdk/anthropic";
import { createOpenAI } from "@ai-sdk/openai";
import { generateObject, generateText, jsonSchema, stepCountIs, streamText, tool } from "ai";
import { assert, CITY, CITY_ARGS, CITY_SCHEMA, CLAUDE, isMockAnswer, KEY, OPENAI_MODEL, PROMPT,
  run, TOOL_PROMPT, URL, WEATHER_SCHEMA, words } from "./check.mjs";

const openai = createOpenAI({ baseURL: `${URL}/v1`, apiKey: KEY });
const anthropic = createAnthropic({ baseURL: `${URL}/v1`, apiKey: KEY });
const models = {
  chat: openai.chat(OPENAI_MODEL),
  responses: openai.responses(OPENAI_MODEL),
  anthropic: anthropic(CLAUDE),
};
const providerOptions = {
  openai: { promptCacheRetention: "24h", maxToolCalls: 3 },
  anthropic: { cacheControl: { type: "ephemeral" } },
};
const tools = {
  get_weather: tool({
    description: "The weather in a city",
    inputSchema: jsonSchema(WEATHER_SCHEMA),
    execute: async ({ city }) => `sunny in ${city || "the city"}`,
  }),
};

function checkToolSteps(steps) {
  assert.equal(steps.length, 2);
  const calls = steps[0].toolCalls;
  assert.equal(calls.length, 1);
  assert.deepEqual(calls[0].input, CITY_ARGS);
  // no empty text part before the call (an empty bubble in chat UIs)
  assert.deepEqual(steps[0].content.filter((p) => p.type === "text"), []);
  assert.ok(isMockAnswer(steps[1].text, TOOL_PROMPT), steps[1].text);
}

const checks = {};
for (const [surface, model] of Object.entries(models)) {
  checks[`${surface}_generate_usage`] = async () => {
    const r = await generateText({ model, prompt: PROMPT, providerOptions });
    assert.ok(isMockAnswer(r.text), r.text);
    assert.equal(r.usage.outputTokens, words(r.text));
    assert.ok(r.usage.inputTokens > 0);
  };
  checks[`${surface}_stream_usage`] = async () => {
    const r = streamText({ model, prompt: PROMPT });
    let text = "";
    for await (const delta of r.textStream) text += delta;
    assert.ok(isMockAnswer(text), text);
    assert.equal((await r.usage).outputTokens, words(text));
  };
  checks[`${surface}_tool_round_trip`] = async () => {
    const r = await generateText({ model, prompt: TOOL_PROMPT, tools, stopWhen: stepCountIs(2) });
    checkToolSteps(r.steps);
  };
  checks[`${surface}_streamed_tool_round_trip`] = async () => {
    const r = streamText({ model, prompt: TOOL_PROMPT, tools, stopWhen: stepCountIs(2) });
    await r.consumeStream();
    checkToolSteps(await r.steps);
  };
  checks[`${surface}_structured`] = async () => {
    const r = await generateObject({ model, schema: jsonSchema(CITY_SCHEMA), prompt: "a city" });
    assert.deepEqual(r.object, CITY);
  };
}
// The AI SDK sends max_tokens 128000 for a Claude model it does not know: the gateway
// clamps it to the deployment's limit and says so in the answer's `gateway` block.
checks.anthropic_max_tokens_clamped = async () => {
  const r = await generateText({ model: models.anthropic, prompt: PROMPT });
  assert.ok(isMockAnswer(r.text), r.text);
  const note = r.response.body.gateway.max_output_tokens;
  assert.equal(note.requested, 128000);
  assert.ok(note.sent < 128000);
};
await run(checks);
