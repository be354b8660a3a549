"""`GET /metrics`: the Prometheus text format of this process's metrics (adapters/metrics.py).

Owns: who may read them. An admin key as a Bearer token (or `x-api-key`): a missing or
wrong key is a 401, a tenant key a 403; with `[metrics] public = true` anyone may read.
With `[metrics] enabled = false` the path is a 404. Gauges that are read from storage
(jobs by status, the ledger writer's queue) are refreshed on each scrape.
"""

from __future__ import annotations

from quart import Response
from quart_trio import QuartTrio

from adapters.metrics import CONTENT_TYPE
from core.errors import NotFound
from server.auth import require_admin
from server.services import Services


def _ledger_queue(services: Services) -> int:
    """Rows held by the storage's group-commit writer (queued or being committed)."""
    writer = getattr(services.storage, "writer", None)
    return int(writer.held) if writer is not None else 0


def register(app: QuartTrio, services: Services) -> None:
    @app.get("/metrics")
    async def metrics() -> Response:
        found = services.metrics
        if found is None:
            raise NotFound("Metrics are turned off ([metrics] enabled = false)")
        if not services.settings.metrics.public:
            await require_admin(services)
        found.refresh(await services.storage.job_counts(), _ledger_queue(services))
        return Response(found.exposition(), status=200, content_type=CONTENT_TYPE)
