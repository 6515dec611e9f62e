"""Events: the audit trail of result changes and the outbox the workflow engine reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from qhook.store.db import Tx
from qhook.store.tables import events


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    uid: str
    set_id: int
    result_id: int | None
    action: str  # new modified deleted date manual
    actor: str
    occurred_at: datetime
    before: Mapping[str, Any] | None  # flat presented result (qhook.domain.fields.flat_result)
    after: Mapping[str, Any] | None
    changes: Mapping[str, Mapping[str, Any]]  # {"field": {"old": .., "new": ..}}
    evaluations: Sequence[Mapping[str, Any]]  # [{"workflow_id", "fired", "reason"}]
    chain: Mapping[str, Any] | None  # {"depth", "origin_event", "workflows"}


def _event(row: Any) -> EventRecord:
    return EventRecord(
        id=row.id,
        uid=row.uid,
        set_id=row.set_id,
        result_id=row.result_id,
        action=row.action,
        actor=row.actor,
        occurred_at=row.occurred_at,
        before=row.before,
        after=row.after,
        changes=row.changes or {},
        evaluations=row.evaluations or [],
        chain=row.chain,
    )


def insert_event(
    tx: Tx,
    *,
    uid: str,
    set_id: int,
    result_id: int | None,
    action: str,
    actor: str,
    occurred_at: datetime,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    changes: Mapping[str, Any],
    chain: Mapping[str, Any] | None = None,
    evaluations: Sequence[Mapping[str, Any]] = (),
) -> EventRecord:
    row = tx.execute(
        insert(events)
        .values(
            uid=uid,
            set_id=set_id,
            result_id=result_id,
            action=action,
            actor=actor,
            occurred_at=occurred_at,
            before=dict(before) if before is not None else None,
            after=dict(after) if after is not None else None,
            changes=dict(changes),
            evaluations=[dict(e) for e in evaluations],
            chain=dict(chain) if chain is not None else None,
        )
        .returning(events)
    ).one()
    return _event(row)


def set_evaluations(tx: Tx, event_id: int, evaluations: Sequence[Mapping[str, Any]]) -> None:
    tx.execute(
        update(events).where(events.c.id == event_id).values(evaluations=[dict(e) for e in evaluations])
    )


def get_event(tx: Tx, event_id: int) -> EventRecord | None:
    row = tx.execute(select(events).where(events.c.id == event_id)).one_or_none()
    return _event(row) if row else None


def get_event_by_uid(tx: Tx, uid: str) -> EventRecord | None:
    row = tx.execute(select(events).where(events.c.uid == uid)).one_or_none()
    return _event(row) if row else None


def list_events(
    tx: Tx,
    *,
    result_id: int | None = None,
    set_id: int | None = None,
    set_ids: Sequence[int] | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[EventRecord]:
    """Newest first; ``set_ids`` limits to sets a principal may use; ``before_id`` is the cursor."""
    query = select(events).order_by(events.c.id.desc()).limit(limit)
    if result_id is not None:
        query = query.where(events.c.result_id == result_id)
    if set_id is not None:
        query = query.where(events.c.set_id == set_id)
    if set_ids is not None:
        query = query.where(events.c.set_id.in_(list(set_ids)))
    if before_id is not None:
        query = query.where(events.c.id < before_id)
    return [_event(r) for r in tx.execute(query)]
