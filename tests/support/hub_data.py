"""Deliveries and attempts written straight into the tables, so Hub tests need no worker."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, text, update

from qhook.clock import utcnow
from qhook.domain.ids import new_uid
from qhook.store import hub
from qhook.store.db import Database, Tx
from qhook.store.deliveries import insert_delivery
from qhook.store.tables import attempts, deliveries, endpoints, sets, signals, workflows

_batch = itertools.count(1000)


def ensure_signal(tx: Tx, *, set_id: int, workflow_id: int, signal_id: int, now: datetime) -> None:
    """A real set, workflow and active webhook signal with these ids, so the rows can be sent again."""
    if tx.execute(select(signals.c.id).where(signals.c.id == signal_id)).first() is not None:
        return
    _ensure_set(tx, set_id, now)
    if tx.execute(select(workflows.c.id).where(workflows.c.id == workflow_id)).first() is None:
        tx.execute(
            insert(workflows).values(
                id=workflow_id,
                set_id=set_id,
                name=f"Hub workflow {workflow_id}",
                active=True,
                triggers={"entry": True},
                created_at=now,
                updated_at=now,
            )
        )
    tx.execute(
        insert(signals).values(
            id=signal_id,
            workflow_id=workflow_id,
            position=0,
            type="webhook",
            config={"url": "https://erp.example.com/hooks/qc"},
            active=True,
        )
    )
    _past_explicit_ids(tx, ("sets", "workflows", "signals"))


def ensure_sets(db: Database, *set_ids: int) -> None:
    """Empty sets with these ids (a user's restriction must name sets that exist)."""
    with db.transaction() as tx:
        for set_id in set_ids:
            _ensure_set(tx, set_id, utcnow())
        _past_explicit_ids(tx, ("sets",))


def _ensure_set(tx: Tx, set_id: int, now: datetime) -> None:
    if tx.execute(select(sets.c.id).where(sets.c.id == set_id)).first() is None:
        tx.execute(
            insert(sets).values(
                id=set_id, name=f"Hub set {set_id}", kind="analysis_set", created_at=now, updated_at=now
            )
        )


def _past_explicit_ids(tx: Tx, tables: tuple[str, ...]) -> None:
    if tx.dialect.name == "postgresql":  # explicit ids: move the sequences past them
        for table in tables:
            tx.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"GREATEST((SELECT max(id) FROM {table}), 1))"
                )
            )


def add_delivery(
    db: Database,
    *,
    status: str = "pending",
    workflow_id: int = 1,
    signal_id: int = 1,
    set_id: int = 1,
    result_id: int | None = 1,
    action: str = "new",
    url: str = "https://erp.example.com/hooks/qc",
    endpoint: str = "https://erp.example.com:443",
    body: str | None = None,
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
    attempt_count: int | None = None,
    lease_expires_at: datetime | None = None,
    hint: str | None = None,
    last_status_code: int | None = None,
) -> int:
    """One delivery row in ``status``; the body names a batch number unless given."""
    now = created_at or utcnow()
    text = body if body is not None else json.dumps({"batchnumber_": f"B-{next(_batch)}"})
    finished = status in ("succeeded", "failed", "cancelled")
    with db.transaction() as tx:
        if signal_id is not None:
            ensure_signal(tx, set_id=set_id, workflow_id=workflow_id, signal_id=signal_id, now=now)
        delivery_id = insert_delivery(
            tx,
            webhook_id=new_uid("msg", now),
            event_id=None,
            workflow_id=workflow_id,
            signal_id=signal_id,
            set_id=set_id,
            result_id=result_id,
            action=action,
            url=url,
            endpoint=endpoint,
            body=text,
            ordered=False,
            now=now,
        )
        values: dict[str, Any] = {
            "status": status,
            "updated_at": updated_at or now,
            "attempt_count": attempt_count
            if attempt_count is not None
            else (0 if status == "pending" else 1),
            "next_attempt_at": None if finished else now,
            "lease_expires_at": lease_expires_at,
            "lease_owner": "worker-test" if lease_expires_at else None,
            "hint": hint,
            "last_status_code": last_status_code,
            "delivered_at": now if status == "succeeded" else None,
        }
        tx.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(**values))
    return delivery_id


def add_attempt(
    db: Database,
    delivery_id: int,
    *,
    number: int = 1,
    started_at: datetime | None = None,
    duration_ms: int | None = 100,
    status_code: int | None = 200,
    error_kind: str | None = None,
    trigger: str = "scheduled",
    request_headers: dict[str, str] | None = None,
    response_body: str | None = "ok",
    hint: str | None = None,
) -> None:
    with db.transaction() as tx:
        tx.execute(
            insert(attempts).values(
                delivery_id=delivery_id,
                number=number,
                trigger=trigger,
                started_at=started_at or utcnow(),
                duration_ms=duration_ms,
                request_headers=request_headers or {"content-type": "application/json"},
                status_code=status_code,
                response_headers={"content-type": "text/plain"},
                response_body=response_body,
                error_kind=error_kind,
                error=None if error_kind is None else f"{error_kind} failure",
                hint=hint,
            )
        )


def set_endpoint_state(db: Database, origin: str, **values: Any) -> None:
    """An endpoints row as the worker would leave it (throttled, circuit open, ...)."""
    with db.transaction() as tx:
        tx.execute(insert(endpoints).values(origin=origin, updated_at=utcnow(), **values))


def days_ago(days: float) -> datetime:
    return utcnow() - timedelta(days=days)


def every_page(tx: Tx, f: hub.DeliveryFilter, *, size: int) -> list[int]:
    """The ids of every page of the Hub list for ``f``, following the cursor page by page."""
    seen: list[int] = []
    before: int | None = None
    while True:
        page = hub.list_deliveries(tx, f, limit=size, before_id=before)
        seen += [d.id for d in page]
        if len(page) < size:
            return seen
        before = page[-1].id
