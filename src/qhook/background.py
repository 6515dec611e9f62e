"""Background loops beside the API: one periodic-loop shape and one lifespan-hook shape."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import FastAPI

from qhook.context import AppContext


async def repeat(
    work: Callable[[], object],
    stop: asyncio.Event,
    *,
    interval_s: float,
    logger: logging.Logger,
    failure: str,
    action: str,
    wake: asyncio.Event | None = None,
) -> None:
    """Run ``work`` in a thread every ``interval_s`` (sooner when ``wake`` is set) until ``stop``.

    Never raises: a failure is logged as ``failure`` with ``action`` and the loop goes on.
    """
    while not stop.is_set():
        try:
            await asyncio.to_thread(work)
        except Exception:  # the loop must outlive a bad moment of the database
            logger.exception(failure, extra={"action": action})
        if wake is not None:
            wake.clear()
        waiters = {asyncio.ensure_future(stop.wait())}
        if wake is not None:
            waiters.add(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


def in_app(
    run: Callable[[AppContext, asyncio.Event], Coroutine[Any, Any, None]], *, name: str
) -> Callable[[FastAPI], Awaitable[None]]:
    """A lifespan hook for ``qhook serve``: ``run(ctx, stop)`` beside the API, stopped on shutdown."""

    async def start(app: FastAPI) -> None:
        ctx: AppContext = app.state.ctx
        stop = asyncio.Event()
        task = asyncio.create_task(run(ctx, stop), name=name)

        async def _stop() -> None:
            stop.set()
            await task

        app.state.on_stop.append(_stop)

    return start
