"""Background loops beside the API: one periodic-loop shape and one lifespan-hook shape."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import FastAPI

from qhook.context import AppContext
from qhook.errors import StoreError


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

    Never raises: a failure is logged as ``failure`` with ``action`` and the loop goes on. While
    the database is away, one line now and then says so, not a traceback per round.
    """
    away = 0  # rounds in a row the database was away
    while not stop.is_set():
        try:
            await asyncio.to_thread(work)
        except StoreError as exc:  # the database is away or refuses: the operator needs the reason
            away += 1
            if away == 1 or away % 60 == 0:
                logger.warning(
                    "%s: %s; trying again",
                    failure,
                    exc.for_operators,
                    extra={"action": action, "rounds": away},
                )
        except Exception:  # the loop must outlive a bad moment of the database
            logger.exception(failure, extra={"action": action})
        else:
            if away:
                logger.info("database back after %d failed rounds", away, extra={"action": action})
            away = 0
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
