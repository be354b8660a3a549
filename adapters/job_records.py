"""What a job row keeps: its request as stored, its result, and its error object.

Owns: the stored form of a job's request (the body as the client sent it, echoed in the
job object, beside the admitted request in its core encoding, `core.request_codec`,
which is what a worker runs, so the job service needs no wire parser; and the W3C trace
context of the request that created it, when tracing is on), what a finished run stores
as the job's result, and the job's `error` object. Reading is tolerant of rows written by
older versions: a row that kept only the body still shows it (`stored_body`), and
running it is refused (`stored_request` raises `ValueError`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.storage.records import JobRecord
from core import request_codec
from core.errors import GatewayError
from core.model import Completion, GatewayRequest


def completion_result(completion: Completion, gateway_info: dict[str, Any]) -> dict[str, Any]:
    """What a finished job stores: enough to render any API shape later."""
    u = completion.usage
    return {
        "text": completion.text,
        "finish_reason": completion.finish_reason,
        "tool_calls": [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in completion.tool_calls
        ],
        "usage": {
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cached_input_tokens": u.cached_input_tokens,
            "cache_write_tokens": u.cache_write_tokens,
            "reasoning_tokens": u.reasoning_tokens,
        },
        "upstream_model": completion.upstream_model,
        "gateway": gateway_info,
    }


_STORED = "umg_job_request"
TRACE_KEYS = ("traceparent", "tracestate")


def stored_form(
    body: dict[str, Any], request: GatewayRequest, trace: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """What a job row keeps as its request: the client's body and the core encoding, and
    the trace context of the request that created it (if any)."""
    form = {_STORED: request_codec.VERSION, "body": body, "core": request_codec.encode(request)}
    if trace:
        form["trace"] = dict(trace)
    return form


def stored_trace(job: JobRecord) -> dict[str, str]:
    """The trace context the job was created in ({} when none was kept)."""
    trace = job.request.get("trace")
    if not isinstance(trace, dict):
        return {}
    return {k: v for k, v in trace.items() if k in TRACE_KEYS and isinstance(v, str)}


def stored_body(job: JobRecord) -> dict[str, Any]:
    """The request as the client sent it (a row of an older version kept only that)."""
    stored = job.request
    return stored["body"] if _STORED in stored else stored


def stored_request(job: JobRecord) -> GatewayRequest:
    """The admitted request; `ValueError` when the row does not hold a readable one."""
    if _STORED not in job.request:
        raise ValueError("the job was stored by an older version of the gateway")
    return request_codec.decode(job.request["core"])


def error_of_run(err: GatewayError | None, request_id: str | None) -> dict[str, Any] | None:
    """The job's `error` object: the OpenAI error shape, with the request id of the run
    that failed (the ledger row's) when there was one, as every error body carries."""
    if err is None:
        return None
    body: dict[str, Any] = err.to_body()["error"]
    return body if request_id is None else {**body, "request_id": request_id}
