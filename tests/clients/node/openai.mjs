// The official `openai` Node SDK: Chat Completions and Responses, each plain (usage),
// streamed, a tool round trip and structured output.
import OpenAI from "openai";
import { assert, CITY, CITY_ARGS, CITY_SCHEMA, isMockAnswer, KEY, OPENAI_MODEL, PROMPT, run,
  TOOL_PROMPT, URL, WEATHER_SCHEMA, words } from "./check.mjs";

const client = new OpenAI({ baseURL: `${URL}/v1`, apiKey: KEY, maxRetries: 0 });
const chatTool = { type: "function", function: { name: "get_weather", parameters: WEATHER_SCHEMA } };
const responsesTool = { type: "function", name: "get_weather", parameters: WEATHER_SCHEMA, strict: false };
const cityFormat = { type: "json_schema", json_schema: { name: "city", schema: CITY_SCHEMA, strict: true } };

await run({
  async chat_plain_usage() {
    const r = await client.chat.completions.create({ model: OPENAI_MODEL, messages: [{ role: "user", content: PROMPT }] });
    const text = r.choices[0].message.content;
    assert.ok(isMockAnswer(text), text);
    assert.equal(r.usage.completion_tokens, words(text));
  },
  async chat_stream_usage() {
    const stream = await client.chat.completions.create({
      model: OPENAI_MODEL, messages: [{ role: "user", content: PROMPT }], stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      usage = chunk.usage ?? usage;
    }
    assert.ok(isMockAnswer(text), text);
    assert.equal(usage.completion_tokens, words(text));
  },
  async chat_tool_round_trip() {
    const messages = [{ role: "user", content: TOOL_PROMPT }];
    const first = await client.chat.completions.create({ model: OPENAI_MODEL, messages, tools: [chatTool] });
    const call = first.choices[0].message.tool_calls[0];
    assert.deepEqual(JSON.parse(call.function.arguments), CITY_ARGS);
    messages.push(first.choices[0].message, { role: "tool", tool_call_id: call.id, content: "sunny" });
    const second = await client.chat.completions.create({ model: OPENAI_MODEL, messages, tools: [chatTool] });
    assert.ok(isMockAnswer(second.choices[0].message.content, TOOL_PROMPT));
  },
  async chat_structured() {
    const r = await client.chat.completions.create({
      model: OPENAI_MODEL, messages: [{ role: "user", content: "a city" }], response_format: cityFormat,
    });
    assert.deepEqual(JSON.parse(r.choices[0].message.content), CITY);
  },
  async responses_plain_usage() {
    const r = await client.responses.create({ model: OPENAI_MODEL, input: PROMPT });
    assert.ok(isMockAnswer(r.output_text), r.output_text);
    assert.equal(r.usage.output_tokens, words(r.output_text));
  },
  async responses_stream() {
    const stream = await client.responses.create({ model: OPENAI_MODEL, input: PROMPT, stream: true });
    let text = "";
    let final;
    for await (const event of stream) {
      if (event.type === "response.output_text.delta") text += event.delta;
      if (event.type === "response.completed") final = event.response;
    }
    assert.ok(isMockAnswer(text), text);
    assert.equal(final.usage.output_tokens, words(text));
  },
  async responses_tool_round_trip() {
    const first = await client.responses.create({ model: OPENAI_MODEL, input: TOOL_PROMPT, tools: [responsesTool] });
    const call = first.output.find((item) => item.type === "function_call");
    assert.deepEqual(JSON.parse(call.arguments), CITY_ARGS);
    const second = await client.responses.create({
      model: OPENAI_MODEL, tools: [responsesTool],
      input: [{ role: "user", content: TOOL_PROMPT }, call,
        { type: "function_call_output", call_id: call.call_id, output: "sunny" }],
    });
    assert.ok(isMockAnswer(second.output_text, TOOL_PROMPT));
  },
  async responses_structured() {
    const r = await client.responses.create({
      model: OPENAI_MODEL, input: "a city",
      text: { format: { type: "json_schema", name: "city", schema: CITY_SCHEMA, strict: true } },
    });
    assert.deepEqual(JSON.parse(r.output_text), CITY);
  },
});
