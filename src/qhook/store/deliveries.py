"""Writing deliveries when a workflow fires, and the simple reads the workflow engine needs.

The queue side (claims, leases, outcomes) lives in ``store/queue.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, insert, select, update

from qhook.store import bulk
from qhook.store.db import Tx
from qhook.store.tables import attempts, deliveries


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: int
    webhook_id: str
    event_id: int | None
    workflow_id: int | None
    signal_id: int | None
    set_id: int | None
    result_id: int | None
    action: str
    url: str
    endpoint: str
    body: str
    status: str
    ordered: bool
    order_key: str | None
    created_at: datetime


_COLUMNS = (
    deliveries.c.id,
    deliveries.c.webhook_id,
    deliveries.c.event_id,
    deliveries.c.workflow_id,
    deliveries.c.signal_id,
    deliveries.c.set_id,
    deliveries.c.result_id,
    deliveries.c.action,
    deliveries.c.url,
    deliveries.c.endpoint,
    deliveries.c.body,
    deliveries.c.status,
    deliveries.c.ordered,
    deliveries.c.order_key,
    deliveries.c.created_at,
)


def _row(row: Any) -> DeliveryRow:
    return DeliveryRow(*(getattr(row, c.name) for c in _COLUMNS))


def insert_delivery(
    tx: Tx,
    *,
    webhook_id: str,
    event_id: int | None,
    workflow_id: int,
    signal_id: int,
    set_id: int,
    result_id: int | None,
    action: str,
    url: str,
    endpoint: str,
    body: str,
    ordered: bool,
    now: datetime,
    is_test: bool = False,
) -> int:
    """A pending delivery, due now; ``order_key`` keeps one result's events in order for ordered signals."""
    return int(
        tx.execute(
            insert(deliveries)
            .values(
                webhook_id=webhook_id,
                event_id=event_id,
                workflow_id=workflow_id,
                signal_id=signal_id,
                set_id=set_id,
                result_id=result_id,
                action=action,
                url=url,
                endpoint=endpoint,
                body=body,
                status="pending",
                attempt_count=0,
                next_attempt_at=now,
                ordered=ordered,
                order_key=f"{signal_id}:{result_id}" if ordered else None,
                is_test=is_test,
                created_at=now,
                updated_at=now,
            )
            .returning(deliveries.c.id)
        ).scalar_one()
    )


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A delivery to write when a workflow fires (see ``insert_deliveries``)."""

    webhook_id: str
    event_id: int | None
    workflow_id: int
    signal_id: int
    set_id: int
    result_id: int | None
    action: str
    url: str
    endpoint: str
    body: str
    ordered: bool


_NEW_COLUMNS = (
    "webhook_id",
    "event_id",
    "workflow_id",
    "signal_id",
    "set_id",
    "result_id",
    "action",
    "url",
    "endpoint",
    "body",
    "status",
    "attempt_count",
    "next_attempt_at",
    "ordered",
    "order_key",
    "is_test",
    "created_at",
    "updated_at",
)


# A delivery to write, as ``insert_delivery_rows`` takes it (one tuple, no per-row record):
# (webhook_id, workflow_id, signal_id, set_id, result_id, action, url, endpoint, body, ordered)
DeliveryValues = tuple[str, int, int, int, int | None, str, str, str, str, bool]


def insert_deliveries(
    tx: Tx, rows: Sequence[NewDelivery], *, now: datetime, event_ids: Sequence[int] | None = None
) -> int:
    """Pending deliveries due now, in one executemany; returns how many were written.

    ``event_ids`` (one per row) replaces the rows' event ids: a batch decides its deliveries
    before its events have ids.
    """
    return insert_delivery_rows(
        tx,
        [
            (
                r.webhook_id,
                r.workflow_id,
                r.signal_id,
                r.set_id,
                r.result_id,
                r.action,
                r.url,
                r.endpoint,
                r.body,
                r.ordered,
            )
            for r in rows
        ],
        [r.event_id for r in rows] if event_ids is None else event_ids,
        now=now,
    )


def insert_delivery_rows(
    tx: Tx, rows: Sequence[DeliveryValues], event_ids: Sequence[int | None], *, now: datetime
) -> int:
    """``insert_deliveries`` for rows as tuples, one event id per row.

    This is the hottest insert of an ingest (five rows per result in the benchmark), so it goes
    to the driver directly: SQLAlchemy's per-row parameter processing was a third of
    storeResults' time. Only the time and the booleans need converting, once.
    """
    if not rows:
        return 0
    dialect = tx.dialect
    sqlite = dialect.name == "sqlite"
    if sqlite:
        stamp: Any = bulk.sqlite_time(tx, deliveries.c.created_at)(now)
    else:
        to_time = deliveries.c.created_at.type.bind_processor(dialect)
        stamp = to_time(now) if to_time else now
    placeholder = "?" if sqlite else "%s"
    sql = (
        f"INSERT INTO deliveries ({', '.join(_NEW_COLUMNS)}) "
        f"VALUES ({', '.join([placeholder] * len(_NEW_COLUMNS))})"
    )
    yes, no = (1, 0) if sqlite else (True, False)
    params = [
        (
            webhook_id,
            event_id,
            workflow_id,
            signal_id,
            set_id,
            result_id,
            action,
            url,
            endpoint,
            body,
            "pending",
            0,
            stamp,
            yes if ordered else no,
            f"{signal_id}:{result_id}" if ordered else None,
            no,
            stamp,
            stamp,
        )
        for (
            webhook_id,
            workflow_id,
            signal_id,
            set_id,
            result_id,
            action,
            url,
            endpoint,
            body,
            ordered,
        ), event_id in zip(rows, event_ids, strict=True)
    ]
    tx.exec_driver_sql(sql, params)
    return len(params)


def deliveries_of_event(tx: Tx, event_id: int) -> list[DeliveryRow]:
    query = select(*_COLUMNS).where(deliveries.c.event_id == event_id).order_by(deliveries.c.id)
    return [_row(r) for r in tx.execute(query)]


def deliveries_of_result(tx: Tx, result_id: int) -> list[DeliveryRow]:
    query = select(*_COLUMNS).where(deliveries.c.result_id == result_id).order_by(deliveries.c.id)
    return [_row(r) for r in tx.execute(query)]


def deliveries_of_workflow(tx: Tx, workflow_id: int) -> list[DeliveryRow]:
    query = select(*_COLUMNS).where(deliveries.c.workflow_id == workflow_id).order_by(deliveries.c.id)
    return [_row(r) for r in tx.execute(query)]


UNFINISHED_STATUSES = ("pending", "retrying", "held")


def cancel_unfinished_of_signals(tx: Tx, signal_ids: Sequence[int], *, hint: str, now: datetime) -> int:
    """Cancel the not-yet-finished deliveries of removed signals; returns how many.

    Rows in flight are cancelled too: the worker's outcome then only replaces "cancelled" when the
    receiver took the message (see ``store.queue.record_outcomes``).
    """
    if not signal_ids:
        return 0
    done = tx.execute(
        update(deliveries)
        .where(deliveries.c.signal_id.in_(list(signal_ids)), deliveries.c.status.in_(UNFINISHED_STATUSES))
        .values(status="cancelled", next_attempt_at=None, hint=hint, updated_at=now)
    )
    return int(done.rowcount)


def follow_url(
    tx: Tx, url: str, endpoint: str, now: datetime, *, signal_id: int | None = None, ids: Sequence[int] = ()
) -> int:
    """Point deliveries at ``url`` (on ``endpoint``): the unfinished ones of ``signal_id`` when its
    URL was changed, or the rows ``ids`` a redelivery or replay just queued. They went to the old
    URL for good: fixing a misspelt host or a redirect's target changed nothing for what was
    queued, and a redelivery went where it had failed. Rows held behind the old endpoint's open
    circuit are due at once on the new one. Their earlier attempts keep where they went."""
    which = (
        [deliveries.c.signal_id == signal_id, deliveries.c.status.in_(UNFINISHED_STATUSES)]
        if signal_id is not None
        else [deliveries.c.id.in_(list(ids))]
    )
    where = [*which, deliveries.c.url != url, deliveries.c.is_test.is_(False)]
    moving = select(deliveries.c.id).where(*where)
    old_url = select(deliveries.c.url).where(deliveries.c.id == attempts.c.delivery_id).scalar_subquery()
    tx.execute(
        update(attempts)
        .where(attempts.c.delivery_id.in_(moving), attempts.c.url.is_(None))
        .values(url=old_url)
    )
    moved_out = and_(deliveries.c.status == "held", deliveries.c.endpoint != endpoint)
    done = tx.execute(
        update(deliveries)
        .where(*where)
        .values(
            url=url,
            endpoint=endpoint,
            status=case(
                (and_(moved_out, deliveries.c.attempt_count > 0), "retrying"),
                (moved_out, "pending"),
                else_=deliveries.c.status,
            ),
            next_attempt_at=case((moved_out, now), else_=deliveries.c.next_attempt_at),
            updated_at=now,
        )
    )
    return int(done.rowcount)


def by_signal(tx: Tx, delivery_ids: Sequence[int]) -> dict[int, list[int]]:
    """The ids of these deliveries, by their signal (rows without one left out)."""
    found: dict[int, list[int]] = {}
    query = select(deliveries.c.id, deliveries.c.signal_id).where(
        deliveries.c.id.in_(list(delivery_ids)), deliveries.c.signal_id.is_not(None)
    )
    for delivery_id, signal_id in tx.execute(query):
        found.setdefault(signal_id, []).append(delivery_id)
    return found
