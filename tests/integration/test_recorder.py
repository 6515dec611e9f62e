"""The recorder when the database refuses part of a batch (not an outage), on SQLite and PostgreSQL.

Before: the whole batch was dropped, so every delivery in it was sent again once its lease ran out,
and a refusal that came back every time (NUL in a receiver's answer, on PostgreSQL) sent the same
batch over and over. Now the batch is written again one delivery at a time: only what is refused
waits for its lease.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.delivery import recorder as recorder_mod
from qhook.delivery.recorder import Recorder
from qhook.store import endpoints as endpoint_store
from qhook.store import queue
from qhook.store.db import Tx
from qhook.store.tables import attempts, deliveries
from tests.support.delivery import enqueue, make_signal

URL = "https://erp.example.com/hook"
ORIGIN = "https://erp.example.com:443"
MISSING = 987_654_321  # no such delivery: its attempt breaks the foreign key


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def _attempt(delivery_id: int) -> queue.AttemptRow:
    return queue.AttemptRow(
        delivery_id=delivery_id,
        number=1,
        trigger="scheduled",
        started_at=utcnow(),
        duration_ms=5,
        request_headers={"webhook-id": f"msg_{delivery_id}"},
        status_code=200,
        response_headers={"Server": "erp"},
        response_body="ok",
        error_kind=None,
        error=None,
        hint=None,
    )


def _finish(delivery_id: int) -> queue.Finish:
    return queue.Finish(delivery_id, "succeeded", 1, None, 200, None, None, utcnow())


async def test_a_refused_outcome_costs_only_itself(ctx: AppContext) -> None:
    signal_id = make_signal(ctx, URL)
    good = enqueue(ctx, signal_id, URL, [f'{{"n": {n}}}' for n in range(3)])
    with ctx.db.transaction() as tx:
        tx.execute(
            update(deliveries).values(lease_owner="w1", lease_expires_at=utcnow() + timedelta(minutes=5))
        )
    written: list[int] = []
    recorder = Recorder(ctx.db, _in_thread, written.extend, batch_size=100)
    until = utcnow() + timedelta(minutes=1)

    def throttle(tx: Tx, now: datetime) -> None:
        endpoint_store.throttle(tx, ORIGIN, until, now, "Retry-After")

    recorder.add(_attempt(good[0]), _finish(good[0]))
    recorder.add(_attempt(MISSING), _finish(MISSING))
    recorder.add(_attempt(good[1]), _finish(good[1]), [throttle])
    recorder.add(
        _attempt(good[2]), dataclasses.replace(_finish(good[2]), status="retrying", next_attempt_at=until)
    )
    stop = asyncio.Event()
    stop.set()  # write what is there, then end
    await recorder.run(stop)

    with ctx.db.reading() as tx:
        rows = {r.id: r for r in tx.execute(select(deliveries))}
        recorded = sorted(r.delivery_id for r in tx.execute(select(attempts)))
        state = endpoint_store.get(tx, ORIGIN)
    assert recorded == sorted(good)
    assert [rows[i].status for i in good] == ["succeeded", "succeeded", "retrying"]
    assert all(rows[i].lease_owner is None for i in good)
    assert state is not None and state.throttled_until == until  # the side effect still applied
    assert sorted(written) == sorted([*good, MISSING])  # all leave the worker's hands


async def test_an_answer_the_database_refuses_is_recorded_without_it(ctx: AppContext) -> None:
    """A receiver's answer no database takes (a lone surrogate here): the outcome is written
    without the answer, so the delivery is finished and not sent again when its lease runs out."""
    signal_id = make_signal(ctx, URL)
    [poisoned, fine] = enqueue(ctx, signal_id, URL, ['{"n": 1}', '{"n": 2}'])
    written: list[int] = []
    recorder = Recorder(ctx.db, _in_thread, written.extend, batch_size=100)
    recorder.add(dataclasses.replace(_attempt(poisoned), response_body="caf\udce9"), _finish(poisoned))
    recorder.add(_attempt(fine), _finish(fine))
    stop = asyncio.Event()
    stop.set()
    await recorder.run(stop)

    with ctx.db.reading() as tx:
        rows = {r.id: r for r in tx.execute(select(deliveries))}
        recorded = {r.delivery_id: r for r in tx.execute(select(attempts))}
    assert rows[poisoned].status == "succeeded" and rows[fine].status == "succeeded"
    assert recorded[fine].response_body == "ok" and recorded[fine].hint is None
    assert recorded[poisoned].response_body is None and recorded[poisoned].status_code == 200
    assert "could not store the receiver's answer" in recorded[poisoned].hint
    assert "could not store" in rows[poisoned].hint


class _Writes:
    """The recorder's thread runner, noting the deliveries each transaction finished."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        if args and hasattr(args[0], "finishes"):
            self.batches.append([f.delivery_id for f in args[0].finishes])
        return await asyncio.to_thread(fn, *args)


async def _stream(recorder: Recorder, ids: list[int], every_s: float, urgent_at: int | None = None) -> None:
    for n, delivery_id in enumerate(ids):
        recorder.add(_attempt(delivery_id), _finish(delivery_id), urgent=n == urgent_at)
        await asyncio.sleep(every_s)


async def _recorded(
    ctx: AppContext,
    gather_s: float,
    gather_max_s: float,
    urgent_at: int | None = None,
    count: int = 30,
    every_s: float = 0.005,
) -> tuple[list[list[int]], list[int]]:
    """``count`` outcomes arriving every ``every_s``, with the recorder's step and limit as given
    (wide enough that a loaded machine's scheduling does not decide); (transactions, deliveries)."""
    signal_id = make_signal(ctx, URL)
    ids = enqueue(ctx, signal_id, URL, [f'{{"n": {n}}}' for n in range(count)])
    writes = _Writes()
    written: list[int] = []
    recorder = Recorder(ctx.db, writes, written.extend, batch_size=200)
    stop = asyncio.Event()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recorder_mod, "GATHER_S", gather_s)
        patch.setattr(recorder_mod, "GATHER_MAX_S", gather_max_s)
        running = asyncio.create_task(recorder.run(stop))
        await _stream(recorder, ids, every_s, urgent_at)
        await recorder.drained()
        stop.set()
        await running
    with ctx.db.reading() as tx:
        done = {r.id for r in tx.execute(select(deliveries.c.id).where(deliveries.c.status == "succeeded"))}
    assert done == set(ids) and sorted(written) == sorted(ids)
    return writes.batches, ids


async def test_outcomes_that_keep_coming_share_one_transaction(ctx: AppContext) -> None:
    """A busy worker's outcomes wait while more keep coming. At the quiet worker's single step they
    went out a few at a time: each transaction costs the same round trips whatever it holds."""
    # 60 outcomes over 600 ms or more, steps of 150 ms: one step alone wrote them in four or more.
    batches, ids = await _recorded(ctx, gather_s=0.15, gather_max_s=60.0, count=60, every_s=0.01)
    assert batches == [ids]


async def test_a_gather_ends_at_its_longest_wait(ctx: AppContext) -> None:
    batches, ids = await _recorded(ctx, gather_s=0.02, gather_max_s=0.04, count=60)
    assert len(batches) >= 3  # 60 outcomes over 300 ms or more, in transactions of at most ~40 ms
    assert sorted(i for batch in batches for i in batch) == ids


async def test_an_ordered_deliverys_last_outcome_waits_for_no_company(ctx: AppContext) -> None:
    """The next event of an ordered delivery's result waits until its outcome is written: it goes
    after the next step, while the other outcomes keep coming."""
    batches, ids = await _recorded(ctx, gather_s=0.1, gather_max_s=60.0, urgent_at=3)
    assert len(batches) >= 2
    assert ids[3] in batches[0] and ids[-1] not in batches[0]
