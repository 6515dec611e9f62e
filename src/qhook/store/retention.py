"""Retention of the working records beside the deliveries: the endpoint log, sent error reports,
finished e-mails and spent rate counters. Each grew without end (the endpoint log by a row per
Retry-After answer). Rows go oldest first, in small batches, by primary key (ids grow with time),
so no purge needs an index on its time column or holds a long lock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Table, delete, func, select

from qhook.store.db import Tx
from qhook.store.tables import email_outbox, endpoint_log, error_reports, rate_counters


@dataclass(frozen=True, slots=True)
class Kept:
    """How long each kind of record stays (cutoffs are computed by the caller from the settings)."""

    log_before: datetime  # endpoint log entries
    done_before: datetime  # error reports and e-mails (sent or not)
    counters_before_ms: int  # rate counters whose window or slot ended before this (epoch ms)


def _conditions(kept: Kept) -> dict[str, tuple[Table, ColumnElement[bool]]]:
    return {
        "endpoint log entries": (endpoint_log, endpoint_log.c.at < kept.log_before),
        # Unsent ones too: without QHOOK_SMTP_URL they were kept for ever, and a mail server set up
        # months later got every stale digest and e-mail at once.
        "error reports": (error_reports, error_reports.c.created_at < kept.done_before),
        "e-mails": (email_outbox, email_outbox.c.created_at < kept.done_before),
    }


def count(tx: Tx, kept: Kept) -> dict[str, int]:
    found = {
        name: int(tx.execute(select(func.count()).select_from(table).where(condition)).scalar_one())
        for name, (table, condition) in _conditions(kept).items()
    }
    found["rate counters"] = int(
        tx.execute(
            select(func.count())
            .select_from(rate_counters)
            .where(rate_counters.c.window_start_ms < kept.counters_before_ms)
        ).scalar_one()
    )
    return found


def purge_batch(tx: Tx, kept: Kept, batch: int) -> dict[str, int]:
    """Delete up to ``batch`` rows of each kind; rows removed per kind."""
    removed = {
        name: _oldest(tx, table, condition, batch) for name, (table, condition) in _conditions(kept).items()
    }
    buckets = select(rate_counters.c.bucket).where(rate_counters.c.window_start_ms < kept.counters_before_ms)
    removed["rate counters"] = int(
        tx.execute(delete(rate_counters).where(rate_counters.c.bucket.in_(buckets.limit(batch)))).rowcount
    )
    return removed


def _oldest(tx: Tx, table: Table, condition: ColumnElement[bool], batch: int) -> int:
    ids = select(table.c.id).where(condition).order_by(table.c.id).limit(batch)
    return int(tx.execute(delete(table).where(table.c.id.in_(ids))).rowcount)
