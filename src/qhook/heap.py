"""The garbage collector and a long-running qhook process.

Everything loaded at start (modules, SQLAlchemy metadata and statement caches, FastAPI routes,
pydantic models, Jinja templates) lives as long as the process, yet CPython's full (generation 2)
collection walks every tracked object each time. In ``qhook serve`` one took 50-120 ms (timed with
``gc.callbacks`` under ``python -m bench latency``), every thread waited meanwhile, and the
requests of that moment made the p99. Freezing the start-up objects leaves later collections
only the objects made since.
"""

from __future__ import annotations

import gc
from typing import Any


def freeze_startup_objects() -> None:
    """Collect once, then move every object alive now out of the collector's sight (gc.freeze)."""
    gc.collect()
    gc.freeze()


async def freeze_in_app(_app: Any) -> None:
    """Lifespan hook for ``qhook serve``, added last: the app and its background tasks are set up."""
    freeze_startup_objects()
