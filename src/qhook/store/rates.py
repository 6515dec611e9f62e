"""Shared fixed-window counters: one atomic upsert per hit, so every process sees the same count.

Both statements are built once per dialect with bound parameters: they run on every API request,
and building them anew each time cost more CPU than running them (bench/latency).
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import BigInteger, String, bindparam, case, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from qhook.store.db import Tx
from qhook.store.tables import rate_counters


@functools.cache
def _hit_statement(dialect: str) -> Any:
    dialect_insert = pg_insert if dialect == "postgresql" else sqlite_insert
    now_ms = bindparam("now_ms", type_=BigInteger)
    upsert = dialect_insert(rate_counters).values(
        bucket=bindparam("bucket", type_=String), window_start_ms=now_ms, count=1
    )
    expired = rate_counters.c.window_start_ms <= bindparam("opened_before_ms", type_=BigInteger)
    return upsert.on_conflict_do_update(
        index_elements=[rate_counters.c.bucket],
        set_={
            "count": case((expired, 1), else_=rate_counters.c.count + 1),
            "window_start_ms": case((expired, now_ms), else_=rate_counters.c.window_start_ms),
        },
    ).returning(rate_counters.c.count, rate_counters.c.window_start_ms)


_PEEK = select(rate_counters.c.count, rate_counters.c.window_start_ms).where(
    rate_counters.c.bucket == bindparam("bucket", type_=String),
    rate_counters.c.window_start_ms > bindparam("opened_after_ms", type_=BigInteger),
)


def hit(tx: Tx, bucket: str, *, period_ms: int, now_ms: int) -> tuple[int, int]:
    """Count one hit; return (hits in the current window, window start in epoch ms).

    A window opens at the first hit after the previous one closed, so "31 requests within a
    minute" always trips a 30/minute limit, whatever the clock's second hand says.
    """
    params = {"bucket": bucket, "now_ms": now_ms, "opened_before_ms": now_ms - period_ms}
    row = tx.execute(_hit_statement(tx.dialect.name), params).one()
    return int(row[0]), int(row[1])


def peek(tx: Tx, bucket: str, *, period_ms: int, now_ms: int) -> tuple[int, int] | None:
    """(hits, window start) of the bucket's open window without counting; None when none is open."""
    row = tx.execute(_PEEK, {"bucket": bucket, "opened_after_ms": now_ms - period_ms}).one_or_none()
    return (int(row[0]), int(row[1])) if row else None


_TAKE_BACK = (
    update(rate_counters)
    .where(
        rate_counters.c.bucket == bindparam("b_bucket", type_=String),
        rate_counters.c.window_start_ms == bindparam("b_window_start_ms", type_=BigInteger),
        rate_counters.c.count > 0,
    )
    .values(count=rate_counters.c.count - 1)
)


def take_back(tx: Tx, bucket: str, *, window_start_ms: int) -> None:
    """Uncount one hit of the window that opened at ``window_start_ms`` (gone if it closed since)."""
    tx.execute(_TAKE_BACK, {"b_bucket": bucket, "b_window_start_ms": window_start_ms})
