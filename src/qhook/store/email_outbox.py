"""E-mail signals waiting to be mailed: written with their event, leased by the sender, retried."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update

from qhook.store.db import Tx
from qhook.store.tables import email_outbox


@dataclass(frozen=True, slots=True)
class NewEmail:
    """An e-mail a fired signal queues (rendered now; see ``insert_emails``)."""

    event_id: int | None
    workflow_id: int
    signal_id: int
    set_id: int
    result_id: int | None
    recipients: tuple[str, ...]
    subject: str
    body: str


@dataclass(frozen=True, slots=True)
class QueuedEmail:
    id: int
    event_id: int | None
    workflow_id: int | None
    signal_id: int | None
    set_id: int | None
    result_id: int | None
    recipients: tuple[str, ...]
    subject: str
    body: str
    status: str  # pending sent failed
    attempt_count: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


def _queued(row: Any) -> QueuedEmail:
    return QueuedEmail(
        id=int(row.id),
        event_id=row.event_id,
        workflow_id=row.workflow_id,
        signal_id=row.signal_id,
        set_id=row.set_id,
        result_id=row.result_id,
        recipients=tuple(row.recipients or ()),
        subject=row.subject,
        body=row.body,
        status=row.status,
        attempt_count=row.attempt_count,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        created_at=row.created_at,
        sent_at=row.sent_at,
    )


_INSERT_MANY = insert(email_outbox)


def insert_emails(
    tx: Tx, rows: Sequence[NewEmail], *, now: datetime, event_ids: Sequence[int] | None = None
) -> int:
    """Pending e-mails due now; ``event_ids`` (one per row) replaces the rows' event ids."""
    if not rows:
        return 0
    tx.execute(
        _INSERT_MANY,
        [
            {
                "event_id": r.event_id if event_ids is None else event_ids[i],
                "workflow_id": r.workflow_id,
                "signal_id": r.signal_id,
                "set_id": r.set_id,
                "result_id": r.result_id,
                "recipients": list(r.recipients),
                "subject": r.subject,
                "body": r.body,
                "status": "pending",
                "attempt_count": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for i, r in enumerate(rows)
        ],
    )
    return len(rows)


def lease_due(tx: Tx, now: datetime, *, limit: int, lease: timedelta) -> list[QueuedEmail]:
    """Pending e-mails due by ``now``, pushed ``lease`` into the future while this sender mails them.

    A sender that dies mid-send loses nothing: the rows come due again when the lease runs out.
    On PostgreSQL rows another sender is leasing right now are skipped.
    """
    query = (
        select(email_outbox)
        .where(email_outbox.c.status == "pending", email_outbox.c.next_attempt_at <= now)
        .order_by(email_outbox.c.next_attempt_at, email_outbox.c.id)
        .limit(limit)
    )
    if tx.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    found = [_queued(r) for r in tx.execute(query)]
    if found:
        tx.execute(
            update(email_outbox)
            .where(email_outbox.c.id.in_([e.id for e in found]))
            .values(next_attempt_at=now + lease)
        )
    return found


def release(tx: Tx, email_ids: list[int], due_at: datetime) -> None:
    """Give leased e-mails back untried, due at ``due_at`` (no attempt used up)."""
    if email_ids:
        tx.execute(
            update(email_outbox).where(email_outbox.c.id.in_(email_ids)).values(next_attempt_at=due_at)
        )


def mark_sent(tx: Tx, email_id: int, now: datetime) -> None:
    tx.execute(
        update(email_outbox)
        .where(email_outbox.c.id == email_id)
        .values(
            status="sent",
            sent_at=now,
            attempt_count=email_outbox.c.attempt_count + 1,
            next_attempt_at=None,
            last_error=None,
        )
    )


def mark_failed_attempt(tx: Tx, email_id: int, *, error: str, retry_at: datetime | None) -> None:
    """One attempt failed: try again at ``retry_at``, or give up (``failed``) when it is None."""
    tx.execute(
        update(email_outbox)
        .where(email_outbox.c.id == email_id)
        .values(
            status="pending" if retry_at is not None else "failed",
            attempt_count=email_outbox.c.attempt_count + 1,
            next_attempt_at=retry_at,
            last_error=error[:2000],
        )
    )


def emails_of_event(tx: Tx, event_id: int) -> list[QueuedEmail]:
    query = select(email_outbox).where(email_outbox.c.event_id == event_id).order_by(email_outbox.c.id)
    return [_queued(r) for r in tx.execute(query)]


def list_emails(
    tx: Tx,
    *,
    status: str | None = None,
    signal_id: int | None = None,
    set_ids: Sequence[int] | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[QueuedEmail]:
    """Newest first; ``set_ids`` limits them to sets a principal may see."""
    query = select(email_outbox).order_by(email_outbox.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(email_outbox.c.status == status)
    if signal_id is not None:
        query = query.where(email_outbox.c.signal_id == signal_id)
    if set_ids is not None:
        query = query.where(email_outbox.c.set_id.in_(list(set_ids)))
    if before_id is not None:
        query = query.where(email_outbox.c.id < before_id)
    return [_queued(r) for r in tx.execute(query)]


def email_by_id(tx: Tx, email_id: int) -> QueuedEmail | None:
    row = tx.execute(select(email_outbox).where(email_outbox.c.id == email_id)).one_or_none()
    return _queued(row) if row else None


def resend(tx: Tx, email_id: int, now: datetime) -> None:
    """Due again now, with a fresh retry schedule (the audit log keeps that it was resent)."""
    tx.execute(
        update(email_outbox)
        .where(email_outbox.c.id == email_id)
        .values(status="pending", next_attempt_at=now, sent_at=None, attempt_count=0)
    )


def count_by_status(tx: Tx, statuses: Sequence[str]) -> dict[str, int]:
    """Counts of these statuses (walks the (status, next_attempt_at) index)."""
    rows = tx.execute(
        select(email_outbox.c.status, func.count())
        .where(email_outbox.c.status.in_(list(statuses)))
        .group_by(email_outbox.c.status)
    )
    return {status: int(n) for status, n in rows}
