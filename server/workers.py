"""Background work that runs beside the HTTP server: the job workers and webhook deliveries.

Owns: what runs in the server process besides request handling, started by `serve`
and cancelled when the HTTP server has shut down (which also drops pending webhook
retries: they live in memory, so shutdown never waits for one).
"""

from __future__ import annotations

from server.services import Services


async def run_workers(services: Services) -> None:
    if services.jobs is not None:  # with 0 workers it still hosts webhook deliveries
        await services.jobs.run_workers(max(0, services.settings.jobs.workers))
