"""A worker's leases fence what it sends and writes, on SQLite and PostgreSQL.

A worker stopped (or cut off from the database) for longer than its lease wrote its stale outcome
over the one of the worker that had taken the delivery over: a delivered message went back to
``retrying`` and was sent again, after later events of the same result. After a database outage
longer than the lease, workers claimed back rows they had sent meanwhile and sent them again.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import update

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.delivery.sender import Sender
from qhook.delivery.worker import Worker
from qhook.store import queue
from qhook.store.tables import deliveries
from tests.support.delivery import (
    attempts_of,
    delivery,
    enqueue,
    make_signal,
    receiver,
    running_worker,
    until,
)

URL = "https://erp.example.com/hook"


def _take_over(ctx: AppContext, delivery_id: int, owner: str) -> None:
    """The lease has run out and ``owner`` claims the delivery, sends it, and records success."""
    now = utcnow()
    with ctx.db.transaction() as tx:
        tx.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id)
            .values(lease_expires_at=now - timedelta(seconds=1))
        )
    with ctx.db.transaction() as tx:
        [taken] = queue.claim(
            tx, owner=owner, now=now, lease_until=now + timedelta(minutes=2), limit=10, lane="first"
        )
        assert taken.id == delivery_id
        attempt = queue.AttemptRow(
            delivery_id=delivery_id,
            number=1,
            trigger="scheduled",
            started_at=now,
            duration_ms=3,
            request_headers={},
            status_code=200,
            response_headers=None,
            response_body="ok",
            error_kind=None,
            error=None,
            hint=None,
        )
        finish = queue.Finish(delivery_id, "succeeded", 1, None, 200, None, None, now)
        assert queue.record_outcomes(tx, [attempt], [finish], now=now, owner=owner) == set()


async def test_a_worker_that_lost_its_lease_does_not_undo_the_takeover(ctx: AppContext) -> None:
    answered = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await answered.wait()  # held until the other worker has taken over
        return web.Response(status=503, text="busy")

    async with receiver(slow) as rx:
        signal_id = make_signal(ctx, rx.url)
        [delivery_id] = enqueue(ctx, signal_id, rx.url, ['{"n": 1}'])
        async with running_worker(ctx) as worker:
            await until(lambda: rx.received)
            await asyncio.to_thread(_take_over, ctx, delivery_id, "other-worker")
            answered.set()  # this worker's 503 comes back after the takeover
            await until(lambda: len(attempts_of(ctx, delivery_id)) == 2)
            assert worker.owner != "other-worker"
    row = delivery(ctx, delivery_id)
    assert row.status == "succeeded" and row.attempt_count == 1 and row.last_status_code == 200
    stale = [a for a in attempts_of(ctx, delivery_id) if a.status_code == 503]
    assert len(stale) == 1 and stale[0].hint.startswith(queue.LOST_LEASE_HINT)


def test_an_outcome_is_written_while_the_lease_is_held_or_left_unclaimed(ctx: AppContext) -> None:
    """A lease that ran out while nobody took the row over still lets its worker finish it."""
    signal_id = make_signal(ctx, URL)
    [delivery_id] = enqueue(ctx, signal_id, URL, ['{"n": 1}'])
    now = utcnow()
    with ctx.db.transaction() as tx:
        queue.claim(tx, owner="w1", now=now, lease_until=now - timedelta(seconds=5), limit=1, lane="first")
        finish = queue.Finish(
            delivery_id, "retrying", 1, now + timedelta(minutes=1), 503, "http_status", "x", None
        )
        assert queue.record_outcomes(tx, [], [finish], now=now, owner="w1") == set()
    assert delivery(ctx, delivery_id).status == "retrying"


async def test_a_delivery_whose_lease_runs_short_is_given_back_unsent(ctx: AppContext) -> None:
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url)
        [delivery_id] = enqueue(ctx, signal_id, rx.url, ['{"n": 1}'])
        sender = Sender(ctx.settings)
        worker = Worker(ctx, sender)

        def short(items: list[Any], since: float) -> None:  # as if every renewal since had failed
            worker._lease_ends.update({i.delivery.id: since for i in items})

        worker._leased = short  # type: ignore[method-assign]
        try:
            await worker._cycle()
            await asyncio.gather(*worker._tasks)
            pending = worker.recorder._pending
            await asyncio.to_thread(worker.recorder._write, pending)
        finally:
            worker._executor.shutdown()
            await sender.close()
    assert rx.received == []
    row = delivery(ctx, delivery_id)
    assert row.status == "pending" and row.lease_owner is None and row.attempt_count == 0
    assert attempts_of(ctx, delivery_id) == []


async def test_no_claim_while_outcomes_wait_to_be_written(ctx: AppContext) -> None:
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url)
        [delivery_id] = enqueue(ctx, signal_id, rx.url, ['{"n": 1}'])
        sender = Sender(ctx.settings)
        worker = Worker(ctx, sender)
        try:
            worker.recorder._outage_tries = 1  # the last write failed: the database was away
            assert await worker._cycle() is False
            assert delivery(ctx, delivery_id).lease_owner is None
            worker.recorder._outage_tries = 0
            await worker._cycle()
            assert delivery(ctx, delivery_id).lease_owner == worker.owner
            await asyncio.gather(*worker._tasks)
        finally:
            worker._executor.shutdown()
            await sender.close()
    assert len(rx.received) == 1
