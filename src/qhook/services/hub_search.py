"""The Hub's body-search indexer on SQLite: adds new deliveries to the index behind the writes.

Writing a delivery never waits for its body to be tokenized (see ``store/search_index.py``);
this loop, beside the API in ``qhook serve``, indexes what arrived since its last round, in
short write transactions so intake and the worker get the lock between batches. Searches
stay exact meanwhile: rows above the index's mark are scanned. PostgreSQL needs none of this
(triggers copy each body into delivery_search, whose trigram index the database keeps; 0003).
"""

from __future__ import annotations

import asyncio
import logging
import time

from qhook import background
from qhook.context import AppContext
from qhook.store import search_index

logger = logging.getLogger("qhook.hub")

INTERVAL_S = 1.0
BATCH = 50  # ~3 ms of tokenizing per write transaction: a request never waits long behind one
ROUND_S = 0.5  # per round at most, half of it holding the lock: catching up takes <= 1/4 core


def index_new(ctx: AppContext, *, batch: int = BATCH, budget_s: float = ROUND_S) -> int:
    """Index deliveries above the mark in batches for up to ``budget_s``; how many were added."""
    if not ctx.db.is_sqlite:
        return 0
    deadline = time.monotonic() + budget_s
    total = 0
    with ctx.db.transaction() as tx:
        search_index.forget_statistics(tx)
    while True:
        started = time.monotonic()
        with ctx.db.transaction(background=True) as tx:
            added = search_index.index_batch(tx, batch=batch)
        total += added
        if added < batch or time.monotonic() >= deadline:
            return total
        # Leave the write lock free about as long as a batch held it: a writer waiting in SQLite's
        # busy handler wakes now and then, and would rarely find it free between batches.
        time.sleep(max(time.monotonic() - started, 0.002))


def unindexed(ctx: AppContext) -> int:
    """Deliveries a search still scans (0 on PostgreSQL)."""
    if not ctx.db.is_sqlite:
        return 0
    with ctx.db.reading() as tx:
        return search_index.unindexed(tx)


async def run_indexer(ctx: AppContext, stop: asyncio.Event) -> None:
    """Index new deliveries every second until ``stop``; never raises (SQLite only)."""
    if not ctx.db.is_sqlite:
        return
    await background.repeat(
        lambda: index_new(ctx),
        stop,
        interval_s=INTERVAL_S,
        logger=logger,
        failure="search indexing failed",
        action="hub_search_index_failed",
    )


# Lifespan hook for ``qhook serve``: index beside the API, stop on shutdown.
start_in_app = background.in_app(run_indexer, name="qhook-search-index")
