"""The on_date scheduler: fires due schedule rows as ``date`` events, once each, even after downtime.

Each tick claims due rows (``fired_at`` null, ``due_at`` <= now) in small batches; for each it
writes a ``date`` event, fans out that one workflow and marks the row fired, all in one
transaction. On PostgreSQL a transaction-level advisory lock lets one scheduler work at a time
and ``FOR UPDATE SKIP LOCKED`` keeps claims apart; SQLite serves one process anyway.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from qhook import background
from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.domain.fields import flat_result
from qhook.services import fanout
from qhook.store import results as result_store
from qhook.store import sets as set_store
from qhook.store import workflows as store
from qhook.store.db import Tx
from qhook.store.workflows import ScheduleRecord

logger = logging.getLogger(__name__)
BATCH_SIZE = 50
TICK_SECONDS = 1.0


def _fire(tx: Tx, ctx: AppContext, schedule: ScheduleRecord, now: datetime) -> bool:
    """Fire one schedule row; False when its workflow or result no longer allows it."""
    store.mark_fired(tx, schedule.id, now)
    workflow = store.get_workflow(tx, schedule.workflow_id)
    if workflow is None or not workflow.active:
        return False
    current = set_store.get_set(tx, workflow.set_id)
    # Locked, as a change of the result locks it: the date event then follows or precedes the
    # change whole (read unlocked, it could carry the older values after the change's delivery).
    result = result_store.get_result(tx, workflow.set_id, schedule.result_id, for_update=True)
    if current is None or result is None:
        return False
    fanout.fire_for_workflow(
        tx,
        ctx,
        workflow.id,
        current,
        result,
        action="date",
        actor="scheduler",
        now=now,
        due_at=schedule.due_at,
    )
    return True


def tick(ctx: AppContext, now: datetime | None = None, *, batch_size: int = BATCH_SIZE) -> int:
    """Fire everything due by ``now``; returns the number of ``date`` events written."""
    now = now or utcnow()
    fired = 0
    while True:
        with ctx.db.transaction() as tx:
            if not store.try_scheduler_lock(tx):
                break  # another process is the scheduler right now
            due = store.claim_due_schedules(tx, now, batch_size)
            for schedule in due:
                fired += _fire(tx, ctx, schedule, now)
        if len(due) < batch_size:
            break
    if fired:
        logger.info("schedules fired", extra={"action": "schedules_fired", "count": fired})
        ctx.wake()
    return fired


def rezone(ctx: AppContext, now: datetime | None = None, *, batch_size: int = 500) -> int:
    """Compute again the due times of unfired rows scheduled in another QHOOK_TIMEZONE (or before
    qhook kept the zone); returns how many rows were looked at. Run when the scheduler starts."""
    now = now or utcnow()
    zone = ctx.settings.timezone
    after_id, seen = 0, 0
    while True:
        with ctx.db.transaction() as tx:
            if not store.try_scheduler_lock(tx):
                return seen  # the scheduler of another process does it
            stale = store.schedules_of_other_zones(tx, zone, after_id=after_id, limit=batch_size)
            for schedule in stale:
                _schedule_again(tx, ctx, schedule, now)
        seen += len(stale)
        if len(stale) < batch_size:
            break
        after_id = stale[-1].id
    if seen:
        logger.info(
            "due times computed again in QHOOK_TIMEZONE",
            extra={"action": "schedules_rezoned", "count": seen, "timezone": zone},
        )
    return seen


def _schedule_again(tx: Tx, ctx: AppContext, schedule: ScheduleRecord, now: datetime) -> None:
    workflow = store.get_workflow(tx, schedule.workflow_id)
    current = set_store.get_set(tx, workflow.set_id) if workflow is not None else None
    result = result_store.get_result(tx, current.id, schedule.result_id) if current is not None else None
    if workflow is None or current is None or result is None:
        return  # its workflow or result is being deleted; the row goes with it
    triggers = fanout.triggers_of(workflow, current.fields)
    if triggers.on_date is None:
        store.drop_schedule(tx, workflow.id, result.id)
        return
    flat = flat_result(result.id, result.date, result.values, current.fields)
    fanout.schedule_result(tx, ctx, workflow.id, triggers, result.id, flat, now)


async def run_scheduler(ctx: AppContext, stop: asyncio.Event, wake: asyncio.Event | None = None) -> None:
    """Tick every second (or when ``wake`` is set) until ``stop``; errors are logged, never fatal."""
    try:
        await asyncio.to_thread(rezone, ctx)
    except Exception:  # the ticks still fire what is due; the next start tries again
        logger.exception("computing due times again failed", extra={"action": "scheduler_error"})
    await background.repeat(
        lambda: tick(ctx),
        stop,
        interval_s=TICK_SECONDS,
        logger=logger,
        failure="scheduler tick failed",
        action="scheduler_error",
        wake=wake,
    )


# Lifespan hook for ``qhook serve``: run the scheduler beside the API, stop it on shutdown.
start_in_app = background.in_app(run_scheduler, name="qhook-scheduler")
