"""Queued error reports (failed deliveries, opened circuits) and their digests per endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update

from qhook.store.db import Tx
from qhook.store.tables import error_reports


@dataclass(frozen=True, slots=True)
class ErrorReport:
    id: int
    endpoint: str
    email: str
    kind: str
    delivery_id: int | None
    text: str
    created_at: datetime
    sent_at: datetime | None


def add(
    tx: Tx, *, endpoint: str, email: str, kind: str, delivery_id: int | None, text: str, now: datetime
) -> None:
    tx.execute(
        insert(error_reports).values(
            endpoint=endpoint, email=email, kind=kind, delivery_id=delivery_id, text=text, created_at=now
        )
    )


# Any fixed 64-bit number, the same in every qhook process: the PostgreSQL advisory lock of the mailer.
MAILER_LOCK = 0x71686F6F6B6D6169


def claim_mailer(tx: Tx) -> bool:
    """Whether this transaction may mail digests now; on PostgreSQL one worker at a time.

    The lock is held until the transaction ends, so a second worker never reads a digest's rows
    while the first is mailing it and has not marked them sent yet. SQLite serves one worker.
    """
    if tx.dialect.name != "postgresql":
        return True
    return bool(tx.execute(select(func.pg_try_advisory_xact_lock(MAILER_LOCK))).scalar_one())


def unsent(tx: Tx, limit: int = 1000, *, lock: bool = False) -> list[ErrorReport]:
    """Unsent reports, oldest first; ``lock`` claims them (rows another transaction holds are skipped)."""
    query = (
        select(error_reports)
        .where(error_reports.c.sent_at.is_(None))
        .order_by(error_reports.c.id)
        .limit(limit)
    )
    if lock and tx.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = tx.execute(query)
    return [
        ErrorReport(r.id, r.endpoint, r.email, r.kind, r.delivery_id, r.text, r.created_at, r.sent_at)
        for r in rows
    ]


def last_sent_at(tx: Tx, endpoint: str, email: str) -> datetime | None:
    value = tx.execute(
        select(func.max(error_reports.c.sent_at)).where(
            error_reports.c.endpoint == endpoint, error_reports.c.email == email
        )
    ).scalar_one_or_none()
    return value if isinstance(value, datetime) else None


def mark_sent(tx: Tx, ids: Sequence[int], now: datetime) -> None:
    if ids:
        tx.execute(update(error_reports).where(error_reports.c.id.in_(list(ids))).values(sent_at=now))
