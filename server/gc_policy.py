"""How the serving process's garbage collector runs: set once, when serving starts.

Owns: the cyclic collector's settings for `umg serve`. With hundreds of open streams the
process holds many long-lived objects (tasks, cancel scopes, connections), and CPython's
default first-generation threshold (700 allocations) makes it walk them many times a
second; each request allocates far more than 700 objects. So:
- `gc.freeze()` once startup is done: what exists then (modules, the catalog, settings)
  moves to the permanent generation and is never scanned again.
- A first-generation threshold of `GEN0_THRESHOLD` allocations instead of 700 (the older
  generations keep their defaults): collections run about 14 times less often, and each
  finds the same cycles. Reference counting still frees everything else at once, so
  memory stays flat (`make bench-rss` measures it).
Measured in docs/performance.md.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000


def tune_for_serving() -> None:
    gc.collect()  # what startup left behind, before it is frozen
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
