// The benchmark's fake provider: OpenAI's chat wire format (JSON and SSE), fast enough
// not to be what a benchmark measures (Node's own HTTP server, no framework).
//
// Owns: answering POST .../chat/completions. `node bench/fake_provider.js [port]` prints
// its base URL on the first line of stdout and serves until killed.
//
// What each answer looks like is chosen by the request itself, so every gateway in front
// of it (they all forward the messages untouched) can ask for the same behaviour: a
// directive anywhere in the last message's text,
//     [fake chunks=20 first=2000 gap=50]
// asks for 20 content chunks on a stream, 2000 ms before the first chunk (or before a
// JSON answer) and 50 ms between chunks. Defaults: 20 chunks, no delays.
"use strict";

const http = require("http");

const DIRECTIVE = /\[fake([^\]]*)\]/;
const WORD = "hello";

function plan(body) {
  const out = { chunks: 20, first: 0, gap: 0 };
  const messages = Array.isArray(body.messages) ? body.messages : [];
  const last = messages.length ? messages[messages.length - 1] : null;
  const text = last && typeof last.content === "string" ? last.content : "";
  const found = DIRECTIVE.exec(text);
  if (found) {
    for (const pair of found[1].trim().split(/\s+/)) {
      const [name, value] = pair.split("=");
      if (name in out && /^\d+$/.test(value || "")) out[name] = Number(value);
    }
  }
  return out;
}

function usage(raw, completion) {
  const prompt = Math.max(1, Math.ceil(raw.length / 4));
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

function chunk(id, model, delta, finish) {
  return "data: " + JSON.stringify({
    id, object: "chat.completion.chunk", created: 1700000000, model,
    choices: [{ index: 0, delta, finish_reason: finish }],
  }) + "\n\n";
}

function later(ms, fn) {
  if (ms > 0) setTimeout(fn, ms); else fn();
}

let counter = 0;

function answer(req, res, raw) {
  let body;
  try {
    body = JSON.parse(raw);
  } catch (err) {
    res.writeHead(400, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: { message: "body is not JSON", type: "invalid_request_error" } }));
    return;
  }
  const p = plan(body);
  const model = typeof body.model === "string" ? body.model : "fake";
  const id = "chatcmpl-fake" + (counter++);
  let gone = false;
  res.on("close", () => { gone = true; });
  if (!body.stream) {
    later(p.first, () => {
      if (gone) return;
      const text = JSON.stringify({
        id, object: "chat.completion", created: 1700000000, model,
        choices: [{ index: 0, message: { role: "assistant", content: "Hello from the fake provider." },
          finish_reason: "stop" }],
        usage: usage(raw, 6),
      });
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
      res.end(text);
    });
    return;
  }
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  res.write(chunk(id, model, { role: "assistant", content: "" }, null));
  const withUsage = body.stream_options && body.stream_options.include_usage;
  const firstWord = chunk(id, model, { content: WORD }, null);
  const nextWord = chunk(id, model, { content: " " + WORD }, null);
  // Each chunk is due at a fixed time from the start, so a busy moment here delays one
  // chunk, not every chunk after it.
  const start = Date.now();
  let sent = 0;
  const next = () => {
    if (gone) return;
    if (sent < p.chunks) {
      res.write(sent === 0 ? firstWord : nextWord);
      sent += 1;
      later(start + p.first + sent * p.gap - Date.now(), next);
      return;
    }
    let tail = chunk(id, model, {}, "stop");
    if (withUsage) {
      tail += "data: " + JSON.stringify({
        id, object: "chat.completion.chunk", created: 1700000000, model, choices: [],
        usage: usage(raw, p.chunks),
      }) + "\n\n";
    }
    res.end(tail + "data: [DONE]\n\n");
  };
  later(p.first, next);
}

const server = http.createServer((req, res) => {
  if (req.method !== "POST" || !req.url.endsWith("/chat/completions")) {
    res.writeHead(404, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: { message: "not found: " + req.url, type: "invalid_request_error" } }));
    req.resume();
    return;
  }
  const parts = [];
  req.on("data", (part) => parts.push(part));
  req.on("end", () => answer(req, res, Buffer.concat(parts).toString("utf8")));
});
server.keepAliveTimeout = 120000;
server.headersTimeout = 125000;
server.requestTimeout = 0;
server.listen(Number(process.argv[2] || 0), "127.0.0.1", 4096, () => {
  process.stdout.write("http://127.0.0.1:" + server.address().port + "\n");
});
process.on("SIGTERM", () => process.exit(0));
