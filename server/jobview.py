"""The job object clients see: a stored job rendered for the API and its webhooks.

Owns: `render_job(job)`, the JSON of `GET /v1/jobs/{id}` (and of webhook bodies). It
needs only the stored job: the request as the client sent it (`request`) and the
admitted request in its core encoding (adapters/job_records.py), from which the finished
job's `result` is rendered in the Responses shape. It imports nothing that needs the
app, so `build_services` can hand it to the job service without an import circle.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adapters.job_records import stored_body, stored_request
from adapters.storage.records import JobRecord
from core.billing import format_usd
from core.model import Completion, ToolCall, Usage
from server.wire.responses import response_object


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _result(job: JobRecord) -> dict[str, Any] | None:
    if job.result is None:
        return None
    stored = job.result
    u = stored["usage"]
    completion = Completion(
        text=stored["text"],
        finish_reason=stored["finish_reason"],
        usage=Usage(
            input_tokens=u["input_tokens"],
            output_tokens=u["output_tokens"],
            cached_input_tokens=u["cached_input_tokens"],
            cache_write_tokens=u["cache_write_tokens"],
            reasoning_tokens=u["reasoning_tokens"],
        ),
        tool_calls=tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in stored["tool_calls"]),
        upstream_model=stored.get("upstream_model"),
    )
    req = stored_request(job)
    return response_object(
        response_id="resp_" + job.id.removeprefix("job_"),
        created_at=int(job.created_at.timestamp()),
        model=req.model,
        completion=completion,
        status="completed",
        error=None,
        gateway=stored["gateway"],
        request=req,
    )


def render_job(job: JobRecord) -> dict[str, Any]:
    return {
        "id": job.id,
        "object": "job",
        "status": job.status,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "completed_at": _iso(job.completed_at),
        "attempts": job.attempts,
        "deadline": None if job.deadline is None else _iso(datetime.fromtimestamp(job.deadline, UTC)),
        "request": stored_body(job),
        "result": _result(job),
        "error": job.error,
        "usage": job.result["usage"] if job.result else None,
        "cost_usd": None if job.cost is None else format_usd(job.cost),
        "webhook_url": job.webhook_url,
        "urls": {"get": f"/v1/jobs/{job.id}", "cancel": f"/v1/jobs/{job.id}/cancel"},
    }
