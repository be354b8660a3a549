"""Background work that runs beside the HTTP server: the job workers.

Owns: what runs in the server process besides request handling, started by `serve`
and cancelled when the HTTP server has shut down.
"""

from __future__ import annotations

from server.services import Services


async def run_workers(services: Services) -> None:
    if services.jobs is not None and services.settings.jobs.workers > 0:
        await services.jobs.run_workers(services.settings.jobs.workers)
