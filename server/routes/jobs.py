"""`/v1/jobs`: durable async requests, and the webhook signing secret.

Owns: the jobs API surface. `POST /v1/jobs` takes `{"request": <unified request>,
"webhook_url"?, "webhook_events_filter"?}` (the URL checked by `core.webhook_targets` as far as the URL shows: a bad scheme, a
literal internal address or `localhost` is a 400) and answers 202 with the job object (`Location` points at it);
`Prefer: wait=N` (N <= 60) holds the answer up to N seconds for a terminal state (then
200). `GET /v1/jobs/{id}` (also honours `Prefer: wait`), `GET /v1/jobs?status=&limit=
&after=` (newest first, cursor paging), `POST /v1/jobs/{id}/cancel` (idempotent on a canceled job;
409 `conflict` on one that already succeeded or failed),
`GET /v1/jobs/{id}/stream` (the job's events as SSE, with `id:` lines: `job.queued`,
`job.running`, ..., ending with the terminal one, which carries the job object; resumed
after `starting_after=N` or `Last-Event-ID: N`; core/job_events.py, adapters/job_stream.py),
`GET /v1/webhooks/secret` (this tenant's Standard Webhooks secret). A tenant sees only
its own jobs: another tenant's id is a 404.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from adapters.driver import Ingress, new_id
from adapters.job_records import TRACE_KEYS
from adapters.job_stream import JobEvents
from adapters.jobs import JobService
from adapters.storage.records import JobRecord, KeyRecord
from adapters.storage.streams import StoredEvent
from adapters.trace_spans import job_creation
from core import durations, job_events, outbox, resume, webhook_targets
from core import jobs as lifecycle
from core.errors import GatewayError, InvalidRequest, NotFound
from core.model import GatewayRequest
from core.sse import encode_comment, encode_event
from server.auth import require_key
from server.http import json_body, to_json
from server.jobview import render_job
from server.query import Query
from server.requestid import REQUEST_ID
from server.services import Services
from server.wire.responses import parse_responses_request

_PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait(?:=(\d+))?(?:$|[;,\s])")
MAX_WAIT = 60
_STATUSES = lifecycle.STATUSES


def prefer_wait() -> float | None:
    header = request.headers.get("prefer")
    if not header:
        return None
    match = _PREFER_WAIT.search(header)
    if match is None:
        return None
    return float(min(int(match.group(1) or MAX_WAIT), MAX_WAIT))


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


async def _create(services: Services, key: KeyRecord, body: dict[str, Any]) -> JobRecord:
    unknown = sorted(set(body) - {"request", "webhook_url", "webhook_events_filter", "deadline"})
    if unknown:
        raise InvalidRequest(f"Unknown field '{unknown[0]}'", param=unknown[0])
    inner = body.get("request")
    if not isinstance(inner, dict):
        raise InvalidRequest("'request' must be an object holding a unified request", param="request")
    hook = body.get("webhook_url")
    if hook is not None:
        if not isinstance(hook, str):
            raise InvalidRequest("'webhook_url' must be an http(s) URL", param="webhook_url")
        refused = webhook_targets.refusal_for_url(hook, _service(services).deliverer.targets)
        if refused is not None:
            raise InvalidRequest(f"'webhook_url' {refused}", param="webhook_url")
    wanted = _events_filter(body)
    try:
        deadline = durations.deadline(
            services.clock.epoch(), request.headers.get("cancel-after"), body.get("deadline")
        )
    except durations.DeadlineError as err:
        raise InvalidRequest(err.message, param=err.param) from None
    try:
        parsed = parse_responses_request(inner)  # refused now, not when a worker runs it
        incoming = {k.lower(): v for k, v in request.headers.items() if k.lower() in TRACE_KEYS}
        with job_creation(services.tracing, services.clock, incoming, key) as traced:
            job = await _service(services).create(
                key, parsed, json.loads(to_json(inner)), hook, trace=traced.trace, events=wanted,
                deadline=deadline,
            )
            traced.created(job.id)
            return job
    except (InvalidRequest, NotFound) as err:
        err.param = f"request.{err.param}" if err.param else "request"
        raise


def _events_filter(body: dict[str, Any]) -> tuple[str, ...] | None:
    """The events the job's webhook wants (kept, without effect, when it has none)."""
    if "webhook_events_filter" not in body:
        return None
    wanted = outbox.events_filter(body["webhook_events_filter"])
    if isinstance(wanted, str):
        raise InvalidRequest(f"'webhook_events_filter' {wanted}", param="webhook_events_filter")
    return wanted


async def _record_refusal(services: Services, key: KeyRecord, error: GatewayError) -> None:
    """A job refused before it was queued gets this request's one ledger row, written by
    the driver as for any request whose body it could not take."""

    async def refuse() -> GatewayRequest:
        raise error

    request_id = str(request.scope.get(REQUEST_ID) or new_id("req"))
    ingress = Ingress(request_id=request_id, endpoint="jobs", parse=refuse, key=key, tracked=False)
    with contextlib.suppress(GatewayError):  # `error` itself, raised again by the caller
        await services.gateway.driver.run(ingress).open()


SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def _frames(jobs: JobService, tenant: str, batch: list[StoredEvent]) -> bytes:
    """The batch as SSE events; the terminal one also carries the job object as it is."""
    out = []
    for e in batch:
        data = e.data
        if e.event is not None and job_events.ends(e.event):
            body = json.loads(data)
            body["job"] = render_job(await jobs.get(tenant, body["job_id"]))
            data = to_json(body)
        out.append(encode_event(data, event=e.event, id=str(e.seq)))
    return b"".join(out)


def register(app: QuartTrio, services: Services) -> None:
    @app.post("/v1/jobs")
    async def create_job() -> Response:
        key = await require_key(services)
        try:
            job = await _create(services, key, await json_body())
        except GatewayError as err:
            await _record_refusal(services, key, err)
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
        query = Query(request.args, ("status", "limit", "after"))
        status = query.choice("status", _STATUSES)
        limit = query.integer("limit", default=20, minimum=1, maximum=100)
        found = await services.storage.list_jobs(key.tenant, status, limit + 1, query.text("after"))
        page = found[:limit]
        body = {
            "object": "list",
            "data": [render_job(j) for j in page],
            "has_more": len(found) > limit,
            "last_id": page[-1].id if page else None,
        }
        return Response(to_json(body), content_type="application/json")

    @app.get("/v1/jobs/<job_id>/stream")
    async def stream_job(job_id: str) -> Response:
        key = await require_key(services)
        query = Query(request.args, ("starting_after",))
        after = resume.cursor(query.text("starting_after"), request.headers.get("last-event-id"))
        jobs = _service(services)
        events = JobEvents(services.storage, services.clock, jobs,
                           poll_seconds=services.settings.streams.poll_seconds)
        first = await events.read(key.tenant, job_id, after)  # 404 before any byte
        keepalive = services.settings.limits.keepalive_seconds

        async def body() -> AsyncIterator[bytes]:
            async for batch in events.follow(key.tenant, job_id, first, after, keepalive=keepalive):
                yield await _frames(jobs, key.tenant, batch) if batch else encode_comment("keep-alive")

        return Response(body(), headers=SSE_HEADERS, content_type="text/event-stream; charset=utf-8")

    @app.post("/v1/jobs/<job_id>/cancel")
    async def cancel_job(job_id: str) -> Response:
        key = await require_key(services)
        job = await _service(services).cancel(key.tenant, job_id)
        return _job_response(job, created=False)

    @app.get("/v1/webhooks/secret")
    async def webhook_secret() -> dict[str, str]:
        key = await require_key(services)
        return {"key": await _service(services).deliverer.secret(key.tenant)}
