"""Expired inspector bins are purged by a loop that runs inside the server."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import uvicorn
from sqlalchemy import select, update

from qhook import server
from qhook.api.app import create_app
from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.services import inspector
from qhook.store import tables


def _bins(ctx: AppContext) -> set[str]:
    with ctx.db.reading() as tx:
        return set(tx.execute(select(tables.inspector_bins.c.id)).scalars())


def _expire(ctx: AppContext, bin_id: str) -> None:
    with ctx.db.transaction() as tx:
        tx.execute(
            update(tables.inspector_bins)
            .where(tables.inspector_bins.c.id == bin_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


async def _wait_for(check: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(check):  # type: ignore[arg-type]
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_loop_purges_bins_that_expire_later_and_stops(ctx: AppContext) -> None:
    kept = inspector.create_bin(ctx, actor="tests")
    gone = inspector.create_bin(ctx, actor="tests")
    stop = asyncio.Event()
    task = asyncio.create_task(inspector.run_purge(ctx, stop, interval_s=0.1))
    await asyncio.sleep(0.2)
    assert _bins(ctx) == {kept.id, gone.id}
    _expire(ctx, gone.id)
    await _wait_for(lambda: _bins(ctx) == {kept.id})
    stop.set()
    await asyncio.wait_for(task, timeout=5)


async def test_serve_runs_the_purge_hook(ctx: AppContext) -> None:
    assert "inspector.start_purge_in_app" in Path(server.__file__).read_text()  # wired into serve
    gone = inspector.create_bin(ctx, actor="tests")
    _expire(ctx, gone.id)
    app = create_app(ctx, lifespan_hooks=[inspector.start_purge_in_app])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    running = uvicorn.Server(config)
    task = asyncio.create_task(running.serve())
    await _wait_for(lambda: gone.id not in _bins(ctx))
    running.should_exit = True
    await asyncio.wait_for(task, timeout=10)
