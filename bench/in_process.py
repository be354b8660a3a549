"""The gateway served inside a bench script's own process, as the bench's `ours` target is.

Owns: `bench_gateway`, the services of a gateway on a SQLite file in live mode to the
fake provider (the process's `UMG_*` and `OPENAI_*` variables left out), migrated, with
the bench key (rpm and tpm limits far from reached), and the GC tuned as `umg serve`
tunes it before it serves. Used by bench/steps.py, served_counts.py and call_counts.py.
"""

from __future__ import annotations

import os

from adapters.admin import create_key
from adapters.config.loader import load_settings
from bench.targets import PROVIDER_KEY
from server.gc_policy import tune_for_serving
from server.services import Services, build_services


async def bench_gateway(provider: str, db: str) -> tuple[Services, str]:
    """The services and the bench key's secret."""
    env = {"DATABASE_URL": f"sqlite:///{db}", "LOG_LEVEL": "warning",
           "OPENAI_API_KEY": PROVIDER_KEY, "OPENAI_BASE_URL": provider + "/v1"}
    settings = load_settings({**{k: v for k, v in os.environ.items() if not k.startswith(("UMG_", "OPENAI_"))}, **env})
    services = await build_services(settings)
    await services.storage.migrate()
    key, _ = await create_key(services.storage, services.clock, tenant="bench", project="bench",
                              rpm=1_000_000_000, tpm=1_000_000_000_000)
    tune_for_serving()  # as `umg serve` does before it serves
    return services, key
