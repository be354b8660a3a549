"""How the serving process's garbage collector runs: set once, when serving starts.

Owns: the cyclic collector's settings for `umg serve`. With hundreds of open streams the
process holds many long-lived objects (tasks, cancel scopes, connections), and CPython's
default first-generation threshold (700 allocations) makes it walk them many times a
second; each request allocates far more than 700 objects. So:
- `gc.freeze()` once startup is done: what exists then (modules, the catalog, settings)
  moves to the permanent generation and is never scanned again.
- A first-generation threshold of `GEN0_THRESHOLD` allocations instead of 700 (the older
  generations keep their defaults). The count is allocations less deallocations, so
  what trips it is the objects requests in flight hold at once (their coroutines,
  cancel scopes, frames): about 150 per JSON request, some 10,000 at 64 concurrent
  requests. At 10,000 a collection then ran every ~150 requests at c=64, found almost
  nothing (reference counting frees nearly everything; 161 objects in 22 collections)
  and walked all of them each time: ~40-60 us per request (`python -m bench.steps`). At
  50,000 the in-flight objects of a few hundred requests fit under it, and a collection
  runs once in many thousand requests. Cyclic garbage waits longer for it: at most
  `GEN0_THRESHOLD` objects' worth, a few MB; memory stays flat (`make bench-rss`).
Measured in docs/performance.md.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 50_000


def tune_for_serving() -> None:
    gc.collect()  # what startup left behind, before it is frozen
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
