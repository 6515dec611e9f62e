"""Events: the audit trail of result changes and the outbox the workflow engine reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from qhook.store import bulk, jsontext
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
    # The version of the result the event shows: after the change, or one more than the last for
    # a deletion (None: made before qhook kept it). Bodies carry it so receivers can order them.
    result_version: int | None = None
    due_at: datetime | None = None  # a ``date`` event: the due time that came due


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
        result_version=row.result_version,
        due_at=row.due_at,
    )


_INSERT = insert(events).returning(events.c.id)
_SET_EVALUATIONS = (
    update(events)
    .where(events.c.id == bindparam("b_id"))
    .values(evaluations=bindparam("b_evaluations", type_=events.c.evaluations.type))
)


def new_event(
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
    result_version: int | None = None,
    due_at: datetime | None = None,
) -> EventRecord:
    """An event not written yet (id 0), with copies of the mappings it is given."""
    return EventRecord(
        id=0,
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
        result_version=result_version,
        due_at=due_at,
    )


def insert_record(tx: Tx, record: EventRecord) -> EventRecord:
    """Write ``record``; the answer is the record with its id (no second read)."""
    new_id = tx.execute(
        _INSERT,
        {
            "uid": record.uid,
            "set_id": record.set_id,
            "result_id": record.result_id,
            "action": record.action,
            "actor": record.actor,
            "occurred_at": record.occurred_at,
            "before": record.before,
            "after": record.after,
            "changes": record.changes,
            "evaluations": record.evaluations,
            "chain": record.chain,
            "result_version": record.result_version,
            "due_at": record.due_at,
        },
    ).scalar_one()
    return replace(record, id=int(new_id))


def set_evaluations(tx: Tx, event_id: int, evaluations: Sequence[Mapping[str, Any]]) -> None:
    tx.execute(_SET_EVALUATIONS, {"b_id": event_id, "b_evaluations": [dict(e) for e in evaluations]})


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
    uid: str | None = None,
) -> list[EventRecord]:
    """Newest first; ``set_ids`` limits to sets a principal may use; ``before_id`` is the cursor."""
    query = select(events).order_by(events.c.id.desc()).limit(limit)
    if uid is not None:
        query = query.where(events.c.uid == uid)
    if result_id is not None:
        query = query.where(events.c.result_id == result_id)
    if set_id is not None:
        query = query.where(events.c.set_id == set_id)
    if set_ids is not None:
        query = query.where(events.c.set_id.in_(list(set_ids)))
    if before_id is not None:
        query = query.where(events.c.id < before_id)
    return [_event(r) for r in tx.execute(query)]


_JSON_COLUMNS = ("before", "after", "changes", "evaluations", "chain")
_insert_many: dict[str, Any] = {}


def _insert_many_statement(tx: Tx) -> Any:
    name = tx.dialect.name
    if name not in _insert_many:
        _insert_many[name] = (
            insert(events)
            .values({c: jsontext.param(tx, f"j_{c}") for c in _JSON_COLUMNS})
            .returning(events.c.id, sort_by_parameter_order=True)
        )
    return _insert_many[name]


EventTexts = tuple[str, str, str]  # before, after, changes as jsontext.dumps writes them


_SQLITE_COLUMNS = (
    "id",
    "uid",
    "set_id",
    "result_id",
    "action",
    "actor",
    "occurred_at",
    "result_version",
    "due_at",
    *_JSON_COLUMNS,
)
_SQLITE_INSERT = bulk.insert_sql(events, _SQLITE_COLUMNS)


def insert_events(
    tx: Tx,
    records: Sequence[EventRecord],
    *,
    evaluations: Sequence[Sequence[Mapping[str, Any]]] | None = None,
    texts: Sequence[EventTexts] | None = None,
) -> list[int]:
    """Insert many events (their ``id`` is ignored) in the order given; their ids.

    ``evaluations`` (one list per record) stand in for the records' own; ``texts`` are their
    before, after and changes already serialised (the fan-out made the same text for the bodies).
    """
    if not records:
        return []
    dumps = jsontext.dumps
    if texts is None:
        texts = [(dumps(r.before), dumps(r.after), dumps(r.changes)) for r in records]
    if evaluations is None:
        evaluations = [r.evaluations for r in records]
    if tx.dialect.name == "sqlite":
        ids = bulk.next_ids(tx, events, len(records))
        to_time = bulk.sqlite_time(tx, events.c.occurred_at)
        tx.exec_driver_sql(
            _SQLITE_INSERT,
            [
                (
                    i,
                    r.uid,
                    r.set_id,
                    r.result_id,
                    r.action,
                    r.actor,
                    to_time(r.occurred_at),
                    r.result_version,
                    None if r.due_at is None else to_time(r.due_at),
                    before,
                    after,
                    changes,
                    dumps(list(e)),
                    dumps(r.chain),
                )
                for i, r, (before, after, changes), e in zip(ids, records, texts, evaluations, strict=True)
            ],
        )
        return ids
    params = [
        {
            "uid": r.uid,
            "set_id": r.set_id,
            "result_id": r.result_id,
            "action": r.action,
            "actor": r.actor,
            "occurred_at": r.occurred_at,
            "result_version": r.result_version,
            "due_at": r.due_at,
            "j_before": before,
            "j_after": after,
            "j_changes": changes,
            "j_evaluations": dumps(list(e)),
            "j_chain": dumps(r.chain),
        }
        for r, (before, after, changes), e in zip(records, texts, evaluations, strict=True)
    ]
    return [int(row.id) for row in tx.execute(_insert_many_statement(tx), params)]
