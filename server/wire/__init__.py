"""Wire codecs: client JSON -> core values, core results -> client JSON. Pure, no I/O.

`responses` (the unified API), `openai_chat` (Chat Completions), `anthropic_messages`
(the Anthropic Messages façade); `validate` and `common` hold the shared checks.
"""
