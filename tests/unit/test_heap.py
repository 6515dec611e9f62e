"""Start-up objects are frozen out of the collector's full sweeps."""

from __future__ import annotations

import gc

from qhook import heap


def test_freeze_moves_every_live_object_to_the_permanent_generation() -> None:
    gc.unfreeze()
    survivor = [object() for _ in range(1000)]
    try:
        heap.freeze_startup_objects()
        assert gc.get_freeze_count() >= len(survivor)
        assert sum(gc.get_count()) < 100  # generations are empty right after: nothing left to sweep
    finally:
        gc.unfreeze()
