"""Helpers for delivery tests: a programmable receiver, queued deliveries, a running worker."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import select, update

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.delivery.sender import Sender
from qhook.delivery.worker import Worker
from qhook.domain import circuit, signing
from qhook.domain.urls import origin_of
from qhook.store import deliveries as delivery_store
from qhook.store import queue, sets, workflows
from qhook.store.tables import attempts, deliveries, signals
from qhook.store.tables import workflows as wf_table

_ids = itertools.count(1)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An aiohttp server on 127.0.0.1; ``handler`` decides each answer (default 200)."""

    handler: Handler | None = None
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(time.monotonic(), request.path, dict(request.headers), body))
        if self.handler is not None:
            return await self.handler(request)
        return web.Response(text="ok")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def bodies(self) -> list[bytes]:
        return [r.body for r in self.received]


@asynccontextmanager
async def receiver(handler: Handler | None = None) -> AsyncIterator[Receiver]:
    server = await Receiver(handler).start()
    try:
        yield server
    finally:
        await server.stop()


def make_signal(ctx: AppContext, url: str, *, error_email: str | None = None, **config: Any) -> int:
    """A set, a workflow and one webhook signal with a signing secret; returns the signal id."""
    now = utcnow()
    with ctx.db.transaction() as tx:
        set_id = sets.insert_set(tx, name=f"set {next(_ids)}", kind="analysis_set", now=now)
        workflow_id = workflows.insert_workflow(
            tx,
            set_id=set_id,
            name="wf",
            active=True,
            triggers={"entry": True},
            filter=None,
            error_email=error_email,
            now=now,
        )
        return workflows.insert_signal(
            tx,
            workflow_id=workflow_id,
            position=0,
            type="webhook",
            config={"url": url, **config},
            secret_enc=ctx.box.encrypt(signing.new_secret()),
        )


def enqueue(
    ctx: AppContext,
    signal_id: int,
    url: str,
    bodies: list[str],
    *,
    result_id: int = 1,
    ordered: bool = False,
) -> list[int]:
    """Pending deliveries as the workflow engine writes them (of the signal's set), one per body,
    in order."""
    now = utcnow()
    ids = []
    with ctx.db.transaction() as tx:
        signal = tx.execute(
            select(signals.c.workflow_id, wf_table.c.set_id)
            .join(wf_table, wf_table.c.id == signals.c.workflow_id)
            .where(signals.c.id == signal_id)
        ).one()
        for body in bodies:
            ids.append(
                delivery_store.insert_delivery(
                    tx,
                    webhook_id=f"msg_{next(_ids):026d}",
                    event_id=None,
                    workflow_id=signal.workflow_id,
                    signal_id=signal_id,
                    set_id=signal.set_id,
                    result_id=result_id,
                    action="new",
                    url=url,
                    endpoint=origin_of(url),
                    body=body,
                    ordered=ordered,
                    now=now,
                )
            )
    return ids


def make_due(ctx: AppContext, ids: list[int] | None = None) -> None:
    """Skip the backoff wait: retrying deliveries become due now."""
    with ctx.db.transaction() as tx:
        query = update(deliveries).where(deliveries.c.status == "retrying")
        if ids is not None:
            query = query.where(deliveries.c.id.in_(ids))
        tx.execute(query.values(next_attempt_at=utcnow()))


def set_retrying(ctx: AppContext, ids: list[int], attempt_count: int = 1) -> None:
    """Put deliveries in the retry lane, due now."""
    with ctx.db.transaction() as tx:
        tx.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids))
            .values(status="retrying", attempt_count=attempt_count, next_attempt_at=utcnow())
        )


def delivery(ctx: AppContext, delivery_id: int) -> Any:
    with ctx.db.reading() as tx:
        return tx.execute(select(deliveries).where(deliveries.c.id == delivery_id)).one()


def attempts_of(ctx: AppContext, delivery_id: int) -> list[Any]:
    with ctx.db.reading() as tx:
        return list(
            tx.execute(
                select(attempts).where(attempts.c.delivery_id == delivery_id).order_by(attempts.c.number)
            )
        )


def statuses(ctx: AppContext) -> dict[str, int]:
    with ctx.db.reading() as tx:
        return queue.depth_by_status(tx)


async def until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``check`` (run in a thread) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(interval)


@asynccontextmanager
async def running_worker(
    ctx: AppContext, *, cool_off_s: float = 60.0, **kwargs: Any
) -> AsyncIterator[Worker]:
    sender = Sender(ctx.settings)
    policy = circuit.CircuitPolicy(cool_off=timedelta(seconds=cool_off_s))
    kwargs.setdefault("shutdown_grace_s", 1.0)
    worker = Worker(ctx, sender, circuit_policy=policy, **kwargs)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await task
        await sender.close()
