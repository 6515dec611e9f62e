"""An idle worker polls as often as QHOOK_POLL_INTERVAL_S says, yet sends rows that come due on time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, update

from qhook.clock import utcnow
from qhook.context import AppContext, open_context
from qhook.settings import Settings
from qhook.store.tables import deliveries
from tests.support.delivery import delivery, enqueue, make_signal, receiver, running_worker, until


@pytest.fixture
def slow_poll_ctx(settings: Settings) -> Iterator[AppContext]:
    context = open_context(settings.model_copy(update={"poll_interval_s": 30.0}))
    yield context
    context.db.dispose()


def _count_claims(ctx: AppContext) -> list[str]:
    claims: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # PostgreSQL leases with one UPDATE ... RETURNING; SQLite first selects the ids to lease.
        postgres = statement.startswith("UPDATE deliveries SET lease_owner") and "RETURNING" in statement
        if postgres or statement.startswith("SELECT json_group_array(anon_1.id)"):
            claims.append(statement)

    event.listen(ctx.db.engine, "before_cursor_execute", seen)
    return claims


def _due_in(ctx: AppContext, ids: list[int], seconds: float, attempt_count: int = 0) -> float:
    """Make rows due ``seconds`` from now (no wake-up); returns that moment in monotonic time."""
    status = "retrying" if attempt_count else "pending"
    # Both clocks read together: a slow commit under load must not make an on-time send look early.
    due_wall, due_monotonic = utcnow() + timedelta(seconds=seconds), time.monotonic() + seconds
    with ctx.db.transaction() as tx:
        tx.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids))
            .values(next_attempt_at=due_wall, attempt_count=attempt_count, status=status)
        )
    return due_monotonic


async def test_idle_worker_polls_at_the_configured_interval(settings: Settings) -> None:
    ctx = open_context(settings.model_copy(update={"poll_interval_s": 3.0}))
    try:
        claims = _count_claims(ctx)
        async with running_worker(ctx):
            await until(lambda: len(claims) >= 2)  # the first round: one claim per lane
            started = len(claims)
            await asyncio.sleep(2.2)
            # Before: a claim round every second whatever the setting (two or more here).
            assert len(claims) == started
    finally:
        ctx.db.dispose()


@pytest.mark.parametrize("attempt_count", [0, 2], ids=["first", "retry"])
async def test_a_row_coming_due_is_sent_on_time_despite_a_long_poll_interval(
    slow_poll_ctx: AppContext, attempt_count: int
) -> None:
    ctx = slow_poll_ctx
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url)
        [delivery_id] = enqueue(ctx, signal_id, rx.url, ['{"n": 1}'])
        due_at = _due_in(ctx, [delivery_id], 1.5, attempt_count)
        async with running_worker(ctx):
            await until(lambda: delivery(ctx, delivery_id).status == "succeeded", timeout=6)
    [got] = rx.received
    # Not early, and well before the 30 s poll interval: the worker slept until the row was due.
    assert due_at - 0.05 <= got.at <= due_at + 1.0


async def test_merged_wake_ups_from_a_burst_of_commits_lose_nothing(slow_poll_ctx: AppContext) -> None:
    """Commits on another thread, each followed by wake(): however the wake-ups merge, every row is
    found at once (the 30 s poll would be far too late); a stuck wake-up flag would fail this."""
    ctx = slow_poll_ctx
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url)
        async with running_worker(ctx) as worker:
            await asyncio.sleep(0.3)  # the first round's claims are done; now only wake-ups help
            woken_before = worker._wakes

            def burst() -> list[int]:
                ids: list[int] = []
                for n in range(60):
                    ids += enqueue(ctx, signal_id, rx.url, [f'{{"n": {n}}}'])
                    worker.wake()
                return ids

            ids = await asyncio.to_thread(burst)
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids), timeout=10)
            assert worker._wakes > woken_before
    assert len(rx.received) == 60


async def test_an_ordered_chain_moves_on_as_each_outcome_is_written(slow_poll_ctx: AppContext) -> None:
    """Each next event of a result is claimed when the one before it is written, not at the next
    beat (1 s while busy) or poll (30 s here): ten in a row take well under the ten beats."""
    ctx = slow_poll_ctx
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url, ordered=True)
        ids = enqueue(ctx, signal_id, rx.url, [f'"{n}"' for n in range(10)], result_id=1, ordered=True)
        started = time.monotonic()
        async with running_worker(ctx):
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids), timeout=10)
            elapsed = time.monotonic() - started
    assert [body.decode() for body in rx.bodies()] == [f'"{n}"' for n in range(10)]
    assert elapsed < 4
