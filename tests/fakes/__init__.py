"""A fake model provider over real sockets, for adapter and end-to-end gateway tests.

It speaks the OpenAI Chat Completions format (`POST /v1/chat/completions`), the OpenAI
Responses format (`POST /v1/responses`) and the Anthropic Messages format
(`POST /v1/messages`), JSON and SSE, on 127.0.0.1 with an OS-chosen port, inside the
caller's trio run (raw trio + h11, HTTP/1.1 keep-alive).

Start it::

    from tests.fakes import Fault, running_fake_provider

    async with running_fake_provider() as fake:
        fake.base_url          # "http://127.0.0.1:PORT" (Anthropic base URL)
        fake.openai_base_url   # base_url + "/v1" (OpenAI / compatible base URL)

Answers (the same rules for every format; `tests/fakes/replies.py`):
- Text: "Echo: " + the text of the last user message that has text (or "Echo: ok").
  Words are split on whitespace and joined by one space. Streams send one word per
  delta event. If `max_completion_tokens` / `max_tokens` is smaller than the word count
  the answer is cut to that many words, finish "length" (Anthropic "max_tokens").
- Tool call: when the request has `tools` and either the tool choice names a tool or
  the last user text contains "use tool", the answer is one call to that (or the first)
  tool with arguments `{"text": <last user text>}` (ids `call_0` / `toolu_0`), finish
  "tool_calls" / "tool_use"; streamed as a start piece then two argument fragments.
- Usage: input = per message (words of its text parts + 4), plus the system text's
  words + 4 when a top-level `system` is given; output = answer words (tool: words of
  the arguments JSON). `fake.cached_tokens = N` adds N cached prompt tokens (OpenAI
  `prompt_tokens` includes them, `prompt_tokens_details.cached_tokens` = N; Anthropic
  `cache_read_input_tokens` = N).
- Responses requests are read as chat ones (`replies.responses_as_chat`): `instructions`
  is a system message, each `input` item one message (function_call items have no
  text), `max_output_tokens` the limit. A cut answer has status "incomplete",
  `incomplete_details.reason` "max_output_tokens"; a tool call is a `function_call`
  item (call_id `call_0`). Usage: `input_tokens` includes the N cached ones,
  `input_tokens_details.cached_tokens` = N.
- Responses streams: named events with `type` and `sequence_number`: response.created,
  response.in_progress, [message item: output_item.added, content_part.added,
  output_text.delta per word, output_text.done, content_part.done, output_item.done],
  [function_call item: output_item.added, two function_call_arguments.delta,
  function_call_arguments.done, output_item.done], then response.completed (or
  response.incomplete) with the whole response and usage. No `[DONE]`.
- OpenAI streams: a role chunk, word chunks, tool-call chunks, a finish chunk, then
  (only with `stream_options.include_usage`) the `choices: []` usage chunk, then
  `data: [DONE]`. Anthropic streams: message_start, content_block_start(text), ping,
  content_block_delta per word, content_block_stop, [tool_use block], message_delta
  (stop_reason + cumulative usage), message_stop.
- Unknown paths get 404; a body that is not JSON gets 400.

Faults: `fake.script(Fault(...), ...)` queues faults; each request takes the next one
(FIFO) or none. `Fault` fields (all optional; "chunks" = SSE events already sent):
- `status=N`: answer N with a provider-shaped error body (`message`, `error_type`,
  `error_code` fill it; defaults by status) or the raw `body` bytes. `message` may
  contain "{api_key}", replaced by the key the request carried (to test redaction).
- `headers={...}`: extra response headers (retry-after, x-ratelimit-*, ...), any answer.
- `delay=S`: wait S seconds before the response headers.
- `reset=True`: close the TCP connection without answering (after `delay`); on a reused
  connection this is what a client sees when the server closed it at that very moment.
- `chunk_delay=S`: wait S seconds between stream chunks.
- `stall_after=K` (`stall_for=S`, default 3600): after K chunks, go silent for S seconds.
- `cut_after=K`: after K chunks, close the TCP connection (incomplete chunked body).
- `malformed_after=K`: after K chunks, send an unparsable `data:` event and end.
- `error_event_after=K`: after K chunks, send the provider's mid-stream error (OpenAI
  `data: {"error": {... server_error}}`; Responses `event: error` code server_error;
  Anthropic `event: error` overloaded_error), end. Error bodies on /v1/responses are
  OpenAI-shaped.
- `close_after=True`: answer, then close the connection (a keep-alive connection the
  server drops while the client holds it idle; no `connection: close` header is sent).

TLS: `running_fake_provider(ssl_context=ctx)` serves HTTPS with that server context;
`base_url` is then `https://127.0.0.1:PORT`.

Outages: `fake.outages[path] = Fault(...)` gives every request on `path` (for example
"/v1/chat/completions": all of OpenAI) that fault while no scripted fault is queued;
delete the entry to end the outage.

Chaos: `fake.chaos = Chaos(rate=0.3, seed=1)` faults that share of the remaining
requests at random (500, 429 with retry-after, reset, stall; on streams also a cut or an
error event after two chunks); `fake.chaos.counts` says what was injected.

Records and counters (read them after the call):
- `fake.requests`: every `RecordedRequest(method, path, headers, body)` received, in
  order; headers have lower-case names; `.json()` parses the body.
- `fake.connections_opened`; `fake.connections_open` (now) and `fake.peak_connections`
  (most open at once); `fake.streams_started`, `streams_completed`, `streams_cut`
  (cut by a fault), `streams_aborted` (the client closed the connection mid-stream);
  `fake.client_disconnects` (the client left before any response finished, including
  aborted streams and delayed headers). While waiting (delay, chunk_delay, stall) the
  server watches the socket, so a client that goes away is seen at once; a stream the
  server writes without pauses may finish into the socket buffer before the client
  closes, so tests of disconnects should use `stall_after`.
- `await fake.wait_for(lambda f: f.streams_aborted == 1, timeout=5)` polls a condition.
"""

from tests.fakes.server import Chaos, FakeProvider, Fault, RecordedRequest, running_fake_provider

__all__ = ["Chaos", "FakeProvider", "Fault", "RecordedRequest", "running_fake_provider"]
