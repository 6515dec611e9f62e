"""Workflows, their signals (with encrypted signing secrets) and on_date schedule rows."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Select, bindparam, delete, insert, or_, select, text, update

from qhook.domain.schedule import Kept, change_for
from qhook.store import definitions
from qhook.store.db import Tx
from qhook.store.tables import schedules, signals, workflows

# pg_try_advisory_xact_lock key: "qhook scheduler" (any constant unique to qhook works).
SCHEDULER_LOCK_KEY = 0x71686F6F6B5343


@dataclass(frozen=True, slots=True)
class SignalRecord:
    id: int
    workflow_id: int
    position: int
    type: str
    config: Mapping[str, Any]
    secret_set: bool
    previous_secret_until: datetime | None
    paused_reason: str | None
    active: bool


@dataclass(frozen=True, slots=True)
class SignalSecrets:
    secret_enc: str | None
    previous_secret_enc: str | None
    previous_secret_until: datetime | None


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    id: int
    set_id: int
    name: str
    active: bool
    triggers: Mapping[str, Any]
    filter: Mapping[str, Any] | None
    error_email: str | None
    created_at: datetime
    updated_at: datetime
    signals: tuple[SignalRecord, ...]  # every signal, active or not, by position

    @property
    def active_signals(self) -> tuple[SignalRecord, ...]:
        return tuple(s for s in self.signals if s.active)


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    id: int
    workflow_id: int
    result_id: int
    due_at: datetime
    fired_at: datetime | None
    timezone: str | None = None


def _signal(row: Any) -> SignalRecord:
    return SignalRecord(
        id=row.id,
        workflow_id=row.workflow_id,
        position=row.position,
        type=row.type,
        config=dict(row.config or {}),
        secret_set=row.secret_enc is not None,
        previous_secret_until=row.previous_secret_until,
        paused_reason=row.paused_reason,
        active=row.active,
    )


# Built once with bound parameters: a set's workflows are read for every result written (bench/latency).
_SIGNALS_OF = (
    select(signals)
    .where(signals.c.workflow_id.in_(bindparam("workflow_ids", expanding=True)))
    .order_by(signals.c.position, signals.c.id)
)


def _signals_of(tx: Tx, workflow_ids: Sequence[int]) -> dict[int, list[SignalRecord]]:
    found: dict[int, list[SignalRecord]] = {wid: [] for wid in workflow_ids}
    if not workflow_ids:
        return found
    for row in tx.execute(_SIGNALS_OF, {"workflow_ids": list(workflow_ids)}):
        found[row.workflow_id].append(_signal(row))
    return found


def _workflow(row: Any, its_signals: Sequence[SignalRecord]) -> WorkflowRecord:
    return WorkflowRecord(
        id=row.id,
        set_id=row.set_id,
        name=row.name,
        active=row.active,
        triggers=dict(row.triggers or {}),
        filter=row.filter,
        error_email=row.error_email,
        created_at=row.created_at,
        updated_at=row.updated_at,
        signals=tuple(its_signals),
    )


def insert_workflow(
    tx: Tx,
    *,
    set_id: int,
    name: str,
    active: bool,
    triggers: Mapping[str, Any],
    filter: Mapping[str, Any] | None,
    error_email: str | None,
    now: datetime,
) -> int:
    definitions.changed(tx)
    return int(
        tx.execute(
            insert(workflows)
            .values(
                set_id=set_id,
                name=name,
                active=active,
                triggers=dict(triggers),
                filter=dict(filter) if filter is not None else None,
                error_email=error_email,
                created_at=now,
                updated_at=now,
            )
            .returning(workflows.c.id)
        ).scalar_one()
    )


def update_workflow(
    tx: Tx,
    workflow_id: int,
    *,
    name: str,
    active: bool,
    triggers: Mapping[str, Any],
    filter: Mapping[str, Any] | None,
    error_email: str | None,
    now: datetime,
) -> None:
    definitions.changed(tx)
    tx.execute(
        update(workflows)
        .where(workflows.c.id == workflow_id)
        .values(
            name=name,
            active=active,
            triggers=dict(triggers),
            filter=dict(filter) if filter is not None else None,
            error_email=error_email,
            updated_at=now,
        )
    )


def delete_workflow(tx: Tx, workflow_id: int) -> bool:
    definitions.changed(tx)
    # Children explicitly, so SQLite and PostgreSQL behave alike whatever the FK settings.
    tx.execute(delete(schedules).where(schedules.c.workflow_id == workflow_id))
    tx.execute(delete(signals).where(signals.c.workflow_id == workflow_id))
    return bool(tx.execute(delete(workflows).where(workflows.c.id == workflow_id)).rowcount)


def get_workflow(tx: Tx, workflow_id: int, *, for_update: bool = False) -> WorkflowRecord | None:
    query = select(workflows).where(workflows.c.id == workflow_id)
    if for_update and tx.dialect.name == "postgresql":
        query = query.with_for_update()
    row = tx.execute(query).one_or_none()
    if row is None:
        return None
    return _workflow(row, _signals_of(tx, [row.id])[row.id])


@functools.cache
def _workflows_query(by_set: bool, by_sets: bool, active_only: bool) -> Select[Any]:
    query = select(workflows).order_by(workflows.c.id)
    if by_set:
        query = query.where(workflows.c.set_id == bindparam("set_id", type_=Integer))
    if by_sets:
        query = query.where(workflows.c.set_id.in_(bindparam("set_ids", expanding=True)))
    if active_only:
        query = query.where(workflows.c.active.is_(True))
    return query


def list_workflows(
    tx: Tx,
    *,
    set_id: int | None = None,
    set_ids: Sequence[int] | None = None,
    active_only: bool = False,
) -> list[WorkflowRecord]:
    """Workflows by id; ``set_ids`` limits them to sets a principal may use."""
    params: dict[str, Any] = {"set_id": set_id, "set_ids": list(set_ids or ())}
    query = _workflows_query(set_id is not None, set_ids is not None, active_only)
    rows = list(tx.execute(query, params))
    by_workflow = _signals_of(tx, [r.id for r in rows])
    return [_workflow(r, by_workflow[r.id]) for r in rows]


# --- signals ------------------------------------------------------------------------------------


def insert_signal(
    tx: Tx,
    *,
    workflow_id: int,
    position: int,
    type: str,
    config: Mapping[str, Any],
    secret_enc: str | None,
) -> int:
    definitions.changed(tx)
    return int(
        tx.execute(
            insert(signals)
            .values(
                workflow_id=workflow_id,
                position=position,
                type=type,
                config=dict(config),
                secret_enc=secret_enc,
                active=True,
            )
            .returning(signals.c.id)
        ).scalar_one()
    )


def update_signal(
    tx: Tx, signal_id: int, *, position: int, config: Mapping[str, Any], active: bool = True
) -> None:
    definitions.changed(tx)
    tx.execute(
        update(signals)
        .where(signals.c.id == signal_id)
        .values(position=position, config=dict(config), active=active)
    )


def deactivate_signals(tx: Tx, workflow_id: int, keep_ids: Iterable[int]) -> list[int]:
    """Deactivate the workflow's signals not in ``keep_ids`` (their deliveries keep pointing at them)."""
    definitions.changed(tx)
    keep = list(keep_ids)
    query = update(signals).where(signals.c.workflow_id == workflow_id, signals.c.active.is_(True))
    if keep:
        query = query.where(signals.c.id.not_in(keep))
    return [int(r.id) for r in tx.execute(query.values(active=False).returning(signals.c.id))]


def signal_paused_reason(tx: Tx, signal_id: int) -> str | None:
    """Why a signal is paused (e.g. its receiver answered 410 Gone); None when it is not."""
    reason = tx.execute(select(signals.c.paused_reason).where(signals.c.id == signal_id)).scalar_one_or_none()
    return None if reason is None else str(reason)


def resume_signal(tx: Tx, signal_id: int) -> str | None:
    """Clear a signal's pause (e.g. after 410 Gone); returns the reason it had, None if it wasn't paused."""
    reason = tx.execute(
        select(signals.c.paused_reason).where(signals.c.id == signal_id).with_for_update()
    ).scalar_one_or_none()
    if reason is None:
        return None
    definitions.changed(tx)
    tx.execute(update(signals).where(signals.c.id == signal_id).values(paused_reason=None))
    return str(reason)


def signal_secrets(tx: Tx, signal_id: int) -> SignalSecrets | None:
    row = tx.execute(
        select(signals.c.secret_enc, signals.c.previous_secret_enc, signals.c.previous_secret_until).where(
            signals.c.id == signal_id
        )
    ).one_or_none()
    return SignalSecrets(row.secret_enc, row.previous_secret_enc, row.previous_secret_until) if row else None


def set_signal_secrets(
    tx: Tx,
    signal_id: int,
    *,
    secret_enc: str | None,
    previous_secret_enc: str | None,
    previous_secret_until: datetime | None,
) -> None:
    definitions.changed(tx)
    tx.execute(
        update(signals)
        .where(signals.c.id == signal_id)
        .values(
            secret_enc=secret_enc,
            previous_secret_enc=previous_secret_enc,
            previous_secret_until=previous_secret_until,
        )
    )


# --- schedules ----------------------------------------------------------------------------------

IDS_PER_STATEMENT = 500  # far below SQLite's 32,766 parameters a statement


def _schedule(row: Any) -> ScheduleRecord:
    return ScheduleRecord(row.id, row.workflow_id, row.result_id, row.due_at, row.fired_at, row.timezone)


def get_schedule(tx: Tx, workflow_id: int, result_id: int) -> ScheduleRecord | None:
    row = tx.execute(
        select(schedules).where(schedules.c.workflow_id == workflow_id, schedules.c.result_id == result_id)
    ).one_or_none()
    return _schedule(row) if row else None


def put_schedule(
    tx: Tx,
    workflow_id: int,
    result_id: int,
    due_at: datetime,
    now: datetime,
    timezone: str,
    *,
    fire_past: bool = True,
) -> None:
    """Keep the result's one row due at ``due_at`` as ``schedule.change_for`` decides."""
    current = get_schedule(tx, workflow_id, result_id)
    found = {result_id: current} if current is not None else {}
    put_schedules(tx, workflow_id, {result_id: due_at}, found, now, timezone, fire_past=fire_past)


def put_schedules(
    tx: Tx,
    workflow_id: int,
    dues: Mapping[int, datetime],
    current: Mapping[int, ScheduleRecord],
    now: datetime,
    timezone: str,
    *,
    fire_past: bool = True,
) -> None:
    """``put_schedule`` for many results of one workflow in a few statements: ``current`` holds
    the workflow's rows by result id. One statement per result made an on_date workflow on a set
    of 20,000 results take 12 s to save, holding the write lock."""
    inserts: list[dict[str, object]] = []
    moves: list[dict[str, object]] = []
    zones: list[dict[str, object]] = []
    for result_id, due in dues.items():
        row = current.get(result_id)
        kept = Kept(row.due_at, row.fired_at, row.timezone) if row else None
        change = change_for(kept, due, now, timezone, fire_past=fire_past)
        if change is None:
            continue
        if row is None:
            inserts.append(
                {"workflow_id": workflow_id, "result_id": result_id, "due_at": due, "timezone": timezone}
            )
        elif change.kind == "zone":
            # Only the zone: writing fired_at back as read could undo a firing committed meanwhile.
            zones.append({"b_id": row.id, "b_zone": timezone})
        else:
            moves.append({"b_id": row.id, "b_due": due, "b_fired": change.fired_at, "b_zone": timezone})
    if inserts:
        tx.execute(insert(schedules), inserts)
    if moves:
        tx.execute(_MOVE, moves)
    if zones:
        tx.execute(_ZONE, zones)


_MOVE = (
    update(schedules)
    .where(schedules.c.id == bindparam("b_id"))
    .values(due_at=bindparam("b_due"), fired_at=bindparam("b_fired"), timezone=bindparam("b_zone"))
)
_ZONE = update(schedules).where(schedules.c.id == bindparam("b_id")).values(timezone=bindparam("b_zone"))


def schedules_of_other_zones(tx: Tx, timezone: str, *, after_id: int, limit: int) -> list[ScheduleRecord]:
    """Unfired rows whose due time was computed in another zone, or before the zone was kept."""
    query = (
        select(schedules)
        .where(
            schedules.c.fired_at.is_(None),
            or_(schedules.c.timezone.is_(None), schedules.c.timezone != timezone),
            schedules.c.id > after_id,
        )
        .order_by(schedules.c.id)
        .limit(limit)
    )
    return [_schedule(r) for r in tx.execute(query)]


def drop_schedule(tx: Tx, workflow_id: int, result_id: int) -> None:
    tx.execute(
        delete(schedules).where(schedules.c.workflow_id == workflow_id, schedules.c.result_id == result_id)
    )


def drop_schedules(tx: Tx, schedule_ids: Sequence[int]) -> None:
    for start in range(0, len(schedule_ids), IDS_PER_STATEMENT):
        chunk = list(schedule_ids[start : start + IDS_PER_STATEMENT])
        tx.execute(delete(schedules).where(schedules.c.id.in_(chunk)))


def drop_schedules_of_result(tx: Tx, result_id: int) -> None:
    tx.execute(delete(schedules).where(schedules.c.result_id == result_id))


def drop_schedules_of_workflow(tx: Tx, workflow_id: int) -> None:
    tx.execute(delete(schedules).where(schedules.c.workflow_id == workflow_id))


def schedules_by_result(tx: Tx, workflow_id: int, first: int, last: int) -> dict[int, ScheduleRecord]:
    """The workflow's rows of results ``first`` to ``last`` (ids), by result id. A range, not a
    list of ids: PostgreSQL read a list of 500 against the rows this transaction had just written
    by scanning them all (its statistics still saw an empty table), 80 ms a page at 50,000."""
    query = select(schedules).where(
        schedules.c.workflow_id == workflow_id, schedules.c.result_id.between(first, last)
    )
    return {row.result_id: _schedule(row) for row in tx.execute(query)}


def list_schedules(
    tx: Tx, *, workflow_id: int | None = None, result_id: int | None = None
) -> list[ScheduleRecord]:
    query = select(schedules).order_by(schedules.c.id)
    if workflow_id is not None:
        query = query.where(schedules.c.workflow_id == workflow_id)
    if result_id is not None:
        query = query.where(schedules.c.result_id == result_id)
    return [_schedule(r) for r in tx.execute(query)]


def claim_due_schedules(tx: Tx, now: datetime, limit: int) -> list[ScheduleRecord]:
    """Unfired schedules due by ``now``, locked for this transaction (skipping rows others hold)."""
    query = (
        select(schedules)
        .where(schedules.c.fired_at.is_(None), schedules.c.due_at <= now)
        .order_by(schedules.c.due_at, schedules.c.id)
        .limit(limit)
    )
    if tx.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [_schedule(r) for r in tx.execute(query)]


def mark_fired(tx: Tx, schedule_id: int, now: datetime) -> None:
    tx.execute(update(schedules).where(schedules.c.id == schedule_id).values(fired_at=now))


def try_scheduler_lock(tx: Tx) -> bool:
    """One scheduler at a time on PostgreSQL (held until this transaction ends); always True on SQLite."""
    if tx.dialect.name != "postgresql":
        return True
    return bool(
        tx.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SCHEDULER_LOCK_KEY}).scalar()
    )
