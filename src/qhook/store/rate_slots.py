"""Shared sliding-window rate limits: a ring of send slots per endpoint in ``rate_counters``.

A limit of N per period is N slot rows (``<key>#0`` .. ``<key>#N-1``); ``window_start_ms`` holds
the epoch ms from which the slot is free again. Taking a slot reserves it for the longest a send
may take; when the send ends it frees the slot one period after the send ended. Every request
therefore reached the receiver at least one period after the one that used the slot before it,
so no window of one period ever sees more than N arrivals, however many workers share the ring.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from qhook.store.db import Tx
from qhook.store.tables import rate_counters

MIN_WAIT_MS = 10


def _names(key: str, slots: int) -> list[str]:
    return [f"{key}#{i}" for i in range(slots)]


def _free_slot(tx: Tx, names: list[str], now_ms: int) -> str | None:
    query = (
        select(rate_counters.c.bucket)
        .where(rate_counters.c.bucket.in_(names), rate_counters.c.window_start_ms <= now_ms)
        .order_by(rate_counters.c.window_start_ms)
        .limit(1)
    )
    if tx.dialect.name == "postgresql":
        # Another worker taking a slot right now keeps it; this one looks at the next.
        query = query.with_for_update(skip_locked=True)
    value = tx.execute(query).scalar_one_or_none()
    return str(value) if value is not None else None


def take(
    tx: Tx, key: str, *, slots: int, period_ms: int, now_ms: int, hold_ms: int
) -> tuple[str | None, int]:
    """Take a free slot for one send: ``(slot, 0)``, or ``(None, ms to wait before asking again)``.

    A slot still reserved by a send in flight frees sooner than its reservation says, so the
    wait is at most one period.
    """
    names = _names(key, slots)
    slot = _free_slot(tx, names, now_ms)
    if slot is None:
        present, next_free = tx.execute(
            select(func.count(), func.min(rate_counters.c.window_start_ms)).where(
                rate_counters.c.bucket.in_(names)
            )
        ).one()
        if int(present) < slots:
            dialect_insert = pg_insert if tx.dialect.name == "postgresql" else sqlite_insert
            tx.execute(
                dialect_insert(rate_counters)
                .values([{"bucket": n, "window_start_ms": 0, "count": 0} for n in names])
                .on_conflict_do_nothing(index_elements=[rate_counters.c.bucket])
            )
            slot = _free_slot(tx, names, now_ms)
        if slot is None:
            wait = int(next_free) - now_ms if next_free is not None else MIN_WAIT_MS
            return None, min(max(wait, MIN_WAIT_MS), max(period_ms, MIN_WAIT_MS))
    tx.execute(
        update(rate_counters)
        .where(rate_counters.c.bucket == slot)
        .values(window_start_ms=now_ms + hold_ms, count=rate_counters.c.count + 1)
    )
    return slot, 0


def free_from(tx: Tx, slot: str, at_ms: int) -> None:
    """The send with this slot ended: the slot is free again from ``at_ms``."""
    tx.execute(update(rate_counters).where(rate_counters.c.bucket == slot).values(window_start_ms=at_ms))
