// The official `@anthropic-ai/sdk` (base URL: the root): plain (usage), streamed, a tool
// round trip, structured output (`output_config.format`), countTokens and the model list.
import Anthropic from "@anthropic-ai/sdk";
import { assert, CITY, CITY_ARGS, CITY_SCHEMA, CLAUDE, isMockAnswer, KEY, PROMPT, run,
  TOOL_PROMPT, URL, WEATHER_SCHEMA, words } from "./check.mjs";

const client = new Anthropic({ baseURL: URL, apiKey: KEY, maxRetries: 0 });
const tool = { name: "get_weather", description: "weather", input_schema: WEATHER_SCHEMA };
const text = (message) => message.content.filter((b) => b.type === "text").map((b) => b.text).join("");

await run({
  async plain_usage() {
    const m = await client.messages.create({ model: CLAUDE, max_tokens: 256, messages: [{ role: "user", content: PROMPT }] });
    assert.ok(isMockAnswer(text(m)), text(m));
    assert.equal(m.usage.output_tokens, words(text(m)));
  },
  async stream() {
    const stream = client.messages.stream({ model: CLAUDE, max_tokens: 256, messages: [{ role: "user", content: PROMPT }] });
    let streamed = "";
    stream.on("text", (delta) => { streamed += delta; });
    const final = await stream.finalMessage();
    assert.ok(isMockAnswer(streamed), streamed);
    assert.equal(final.usage.output_tokens, words(streamed));
  },
  async tool_round_trip() {
    const messages = [{ role: "user", content: TOOL_PROMPT }];
    const first = await client.messages.create({ model: CLAUDE, max_tokens: 256, messages, tools: [tool] });
    const call = first.content.find((b) => b.type === "tool_use");
    assert.deepEqual(call.input, CITY_ARGS);
    messages.push({ role: "assistant", content: first.content },
      { role: "user", content: [{ type: "tool_result", tool_use_id: call.id, content: "sunny" }] });
    const second = await client.messages.create({ model: CLAUDE, max_tokens: 256, messages, tools: [tool] });
    assert.ok(isMockAnswer(text(second), TOOL_PROMPT));
  },
  async structured() {
    const m = await client.messages.create({
      model: CLAUDE, max_tokens: 256, messages: [{ role: "user", content: "a city" }],
      output_config: { format: { type: "json_schema", schema: CITY_SCHEMA } },
    });
    assert.deepEqual(JSON.parse(text(m)), CITY);
  },
  async count_tokens_and_models() {
    const count = await client.messages.countTokens({ model: CLAUDE, messages: [{ role: "user", content: PROMPT }] });
    assert.ok(count.input_tokens > words(PROMPT));
    const ids = [];
    for await (const model of client.models.list()) {
      assert.ok(model.display_name && model.created_at);
      ids.push(model.id);
    }
    assert.ok(ids.includes(CLAUDE), ids.join());
  },
});
