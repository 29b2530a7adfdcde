"""The garbage collector, tuned once a server process has started.

CPython's defaults (a young collection every 700 net allocations of container objects, a full
one every 100 young ones) are made for short scripts. A gateway under load keeps a few thousand
objects of its in-flight requests alive at any moment and frees nearly everything else by
reference counting, so each young collection found next to nothing to free, moved the requests
still in flight to an older generation to be scanned again, and a full collection walked the
200,000 objects of the imports and the startup (~200 ms, a pause every few thousand requests).
Measured (bench/RESULTS.md, "the collector"): ~6 % of a streamed request's CPU went to the
collector; with the startup's objects frozen and young collections 70 times rarer, the
gateway's stream RPS went from 0.88 to 1.03 of the floor's in the same run.

Why the collector may run this rarely: a served request leaves no reference cycles behind (a
test holds it so: tests/e2e/test_request_garbage.py), so what it allocates is freed as it ends;
the collector is left for the few cycles elsewhere (a writer round's statement, a traceback).
What is frozen is never collected: only what startup built, which lives as long as the process.
"""

from __future__ import annotations

import gc

from litestar import Litestar

YOUNG_COLLECTION_EVERY = 50_000  # net allocations of container objects; CPython's default: 700
MIDDLE_COLLECTION_EVERY = 20  # young collections; default 10
FULL_COLLECTION_EVERY = 10  # middle collections (and a quarter of the unfrozen old objects new)


def settle_heap(_app: Litestar | None = None) -> None:
    """After startup: collect what startup left, freeze the rest out of every later collection,
    and space collections out. A Litestar ``on_startup`` hook of a serving process only: a test
    process that builds many apps would freeze each one's leftovers for good."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, MIDDLE_COLLECTION_EVERY, FULL_COLLECTION_EVERY)
