"""`/v1/jobs`: durable async requests, and the webhook signing secret.

Owns: the jobs API surface. `POST /v1/jobs` takes `{"request": <unified request>,
"webhook_url"?}` and answers 202 with the job object (`Location` points at it);
`Prefer: wait=N` (N <= 60) holds the answer up to N seconds for a terminal state (then
200). `GET /v1/jobs/{id}` (also honours `Prefer: wait`), `GET /v1/jobs?status=&limit=
&after=` (newest first, cursor paging), `POST /v1/jobs/{id}/cancel` (idempotent on a canceled job;
409 `conflict` on one that already succeeded or failed),
`GET /v1/webhooks/secret` (this tenant's Standard Webhooks secret). A tenant sees only
its own jobs: another tenant's id is a 404.
"""

from __future__ import annotations

import re
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from adapters.jobs import JobService
from adapters.storage.records import JobRecord
from core import jobs as lifecycle
from core.billing import format_usd
from core.errors import InvalidRequest, NotFound
from core.model import Completion, ToolCall, Usage
from server.auth import require_key
from server.http import json_body, to_json
from server.services import Services
from server.wire.responses import parse_responses_request, response_object

_PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait(?:=(\d+))?(?:$|[;,\s])")
MAX_WAIT = 60
_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")


def prefer_wait() -> float | None:
    header = request.headers.get("prefer")
    if not header:
        return None
    match = _PREFER_WAIT.search(header)
    if match is None:
        return None
    return float(min(int(match.group(1) or MAX_WAIT), MAX_WAIT))


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
    req = parse_responses_request(job.request)
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
        "request": job.request,
        "result": _result(job),
        "error": job.error,
        "usage": job.result["usage"] if job.result else None,
        "cost_usd": None if job.cost is None else format_usd(job.cost),
        "webhook_url": job.webhook_url,
        "urls": {"get": f"/v1/jobs/{job.id}", "cancel": f"/v1/jobs/{job.id}/cancel"},
    }


def _job_response(job: JobRecord, created: bool) -> Response:
    status = 200 if lifecycle.is_terminal(job.status) or not created else 202
    return Response(
        to_json(render_job(job)),
        status=status,
        content_type="application/json",
        headers={"location": f"/v1/jobs/{job.id}"},
    )


def _service(services: Services) -> JobService:
    assert services.jobs is not None, "jobs are not configured"
    return services.jobs


def register(app: QuartTrio, services: Services) -> None:
    @app.post("/v1/jobs")
    async def create_job() -> Response:
        key = await require_key(services)
        body = await json_body()
        unknown = sorted(set(body) - {"request", "webhook_url"})
        if unknown:
            raise InvalidRequest(f"Unknown field '{unknown[0]}'", param=unknown[0])
        inner = body.get("request")
        if not isinstance(inner, dict):
            raise InvalidRequest("'request' must be an object holding a unified request", param="request")
        hook = body.get("webhook_url")
        if hook is not None and not (isinstance(hook, str) and hook.startswith(("http://", "https://"))):
            raise InvalidRequest("'webhook_url' must be an http(s) URL", param="webhook_url")
        try:
            job = await _service(services).create(key, inner, hook)
        except (InvalidRequest, NotFound) as err:
            err.param = f"request.{err.param}" if err.param else "request"
            raise
        wait = prefer_wait()
        if wait:
            job = await _service(services).wait(key.tenant, job.id, wait)
        return _job_response(job, created=True)

    @app.get("/v1/jobs/<job_id>")
    async def get_job(job_id: str) -> Response:
        key = await require_key(services)
        wait = prefer_wait()
        jobs = _service(services)
        job = await (jobs.wait(key.tenant, job_id, wait) if wait else jobs.get(key.tenant, job_id))
        return _job_response(job, created=False)

    @app.get("/v1/jobs")
    async def list_jobs() -> Response:
        key = await require_key(services)
        status = request.args.get("status")
        if status is not None and status not in _STATUSES:
            raise InvalidRequest(f"status must be one of {', '.join(_STATUSES)}", param="status")
        raw_limit = request.args.get("limit", "20")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
            raise InvalidRequest("limit must be an integer from 1 to 100", param="limit")
        limit = int(raw_limit)
        found = await services.storage.list_jobs(key.tenant, status, limit + 1, request.args.get("after"))
        page = found[:limit]
        body = {
            "object": "list",
            "data": [render_job(j) for j in page],
            "has_more": len(found) > limit,
            "last_id": page[-1].id if page else None,
        }
        return Response(to_json(body), content_type="application/json")

    @app.post("/v1/jobs/<job_id>/cancel")
    async def cancel_job(job_id: str) -> Response:
        key = await require_key(services)
        job = await _service(services).cancel(key.tenant, job_id)
        return _job_response(job, created=False)

    @app.get("/v1/webhooks/secret")
    async def webhook_secret() -> dict[str, str]:
        key = await require_key(services)
        return {"key": await _service(services).webhook_secret(key.tenant)}
