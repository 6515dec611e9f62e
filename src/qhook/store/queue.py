"""The delivery queue: claims with a lease, batched outcomes, wake-ups, depth.

A claimed row keeps its status (pending/retrying/held) and gets ``lease_owner``/``lease_expires_at``;
a row whose lease ran out is claimable again, so a killed worker loses nothing (at-least-once).
PostgreSQL claims with ``FOR UPDATE SKIP LOCKED`` so workers never take the same row; SQLite has
one worker and renders no locking clause.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    String,
    TextClause,
    and_,
    any_,
    bindparam,
    case,
    exists,
    func,
    not_,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY as PG_ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from qhook.store import definitions
from qhook.store.db import Database, Tx
from qhook.store.tables import (
    DUE_FIRST_SQL,
    DUE_RETRY_SQL,
    UNFINISHED_SQL,
    attempts,
    auth_profiles,
    deliveries,
    endpoints,
    signals,
    workflows,
)

Lane = Literal["first", "retry"]
CLAIMABLE = ("pending", "retrying")
UNFINISHED = ("pending", "retrying", "held")
NOTIFY_CHANNEL = "qhook_deliveries"


# Triggers of sends someone asked for from the Hub (one redelivered, or many replayed), days after
# their event maybe: not retries (max_age does not stop them) and no event-to-delivery delay.
ON_REQUEST = frozenset({"manual", "replay"})


@dataclass(frozen=True, slots=True)
class QueuedDelivery:
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
    attempt_count: int
    next_attempt_at: datetime | None
    ordered: bool
    order_key: str | None
    is_test: bool
    created_at: datetime
    next_trigger: str  # "scheduled"; "manual" after a redelivery, "replay" after a replay (ON_REQUEST)
    probe_failures: int = 0  # failed probes among attempt_count (see retry.decide)


@dataclass(frozen=True, slots=True)
class SendSignal:
    """What the worker needs of a signal at send time (secrets still encrypted)."""

    id: int
    workflow_id: int
    config: dict[str, Any]
    secret_enc: str | None
    previous_secret_enc: str | None
    previous_secret_until: datetime | None
    paused_reason: str | None
    active: bool
    error_email: str | None
    # When the signal's auth profile last changed, as read with the signal: a worker's copy of the
    # profile that is older is read again (another process may have changed it).
    auth_profile_updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    delivery_id: int
    number: int
    trigger: str
    started_at: datetime
    duration_ms: int | None
    request_headers: dict[str, str]
    status_code: int | None
    response_headers: dict[str, str] | None
    response_body: str | None
    error_kind: str | None
    error: str | None
    hint: str | None
    url: str | None = None  # where the request went (None: the delivery's url)


@dataclass(frozen=True, slots=True)
class Finish:
    """The delivery row after an attempt; status succeeded, retrying or failed."""

    delivery_id: int
    status: str
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error_kind: str | None
    hint: str | None
    delivered_at: datetime | None
    probe_failures: int | None = None  # None: as it was


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
    deliveries.c.attempt_count,
    deliveries.c.next_attempt_at,
    deliveries.c.ordered,
    deliveries.c.order_key,
    deliveries.c.is_test,
    deliveries.c.created_at,
    deliveries.c.next_trigger,
    deliveries.c.probe_failures,
)


def _queued(row: Any) -> QueuedDelivery:
    # Rows come from select/returning(*_COLUMNS), so they are already in field order; building by
    # position instead of getattr per column was 6 % of the worker's CPU in bench/throughput.
    return QueuedDelivery(*row)


def _not_blocked(now: Any) -> ColumnElement[bool]:
    """Rows whose endpoint is usable and whose signal is not paused; ordered rows only at their turn."""
    blocked = select(endpoints.c.origin).where(
        or_(
            endpoints.c.paused.is_(True),
            endpoints.c.throttled_until > now,
            endpoints.c.circuit_state != "closed",
        )
    )
    return and_(
        deliveries.c.endpoint.not_in(blocked),
        _signal_usable(),
        or_(deliveries.c.ordered.is_(False), not_(_EARLIER_UNFINISHED)),
    )


def _signal_usable() -> ColumnElement[bool]:
    """Rows whose signal is neither paused (a 410) nor switched off."""
    # NOT IN a subquery, like the blocked origins: evaluated once per statement (a hashed list),
    # and PostgreSQL does not plan it as an anti-join whose row estimate (all rows of a lone signal
    # "match") made it sort every due row instead of walking the lane's index to the LIMIT.
    paused_signals = select(signals.c.id).where(
        or_(signals.c.paused_reason.is_not(None), signals.c.active.is_(False))
    )
    return or_(deliveries.c.signal_id.is_(None), deliveries.c.signal_id.not_in(paused_signals))


def lease_free(now: Any) -> ColumnElement[bool]:
    """Rows no worker holds: never leased, or the lease ran out (``now`` a value or a bind parameter)."""
    return or_(deliveries.c.lease_expires_at.is_(None), deliveries.c.lease_expires_at <= now)


_OLDER = deliveries.alias("older")
# The partial index's own terms, as SQLite needs them to use it (``order_key =`` implies the rest).
_OLDER_UNFINISHED = text(f"older.{UNFINISHED_SQL}")
_EARLIER_UNFINISHED = exists().where(
    _OLDER.c.order_key == deliveries.c.order_key,
    _OLDER.c.id < deliveries.c.id,
    _OLDER_UNFINISHED,
)


def ordered_predecessor(tx: Tx, delivery_id: int) -> tuple[int, str] | None:
    """For an ``ordered`` delivery: the earliest unfinished delivery of the same order key before
    it, (id, status), which it waits for; None when it waits for none (or is not ordered)."""
    current = deliveries.alias("current")
    row = tx.execute(
        select(_OLDER.c.id, _OLDER.c.status)
        .select_from(current.join(_OLDER, _OLDER.c.order_key == current.c.order_key))
        .where(
            current.c.id == delivery_id,
            current.c.ordered.is_(True),
            _OLDER.c.id < current.c.id,
            _OLDER_UNFINISHED,
        )
        .order_by(_OLDER.c.id)
        .limit(1)
    ).first()
    return (int(row.id), str(row.status)) if row else None


@functools.cache
def _claim_statement(lane: Lane, excluding: bool) -> Any:
    """The claim, built once per shape with bound parameters (now, limit, owner, lease_until,
    excluded): building this statement anew per claim (an alias, three subqueries) cost more
    CPU than running it, and a claim runs for every wake-up (bench/latency)."""
    return _lease_statement(_due(lane, excluding))


@functools.cache
def _due(lane: Lane, excluding: bool) -> Any:
    """The ids a claim leases: due, free, not blocked, oldest due first, at most ``limit``."""
    # The index predicate's own text (status and lane), not bound parameters: SQLite uses a partial
    # index only when the query repeats its terms, and PostgreSQL then proves it for any plan.
    now: BindParameter[datetime] = bindparam("now", type_=deliveries.c.next_attempt_at.type)
    conditions: list[ColumnElement[bool] | TextClause] = [
        text(DUE_FIRST_SQL if lane == "first" else DUE_RETRY_SQL),
        deliveries.c.next_attempt_at <= now,
        lease_free(now),
        _not_blocked(now),
    ]
    if excluding:
        conditions.append(deliveries.c.endpoint.not_in(bindparam("excluded", expanding=True)))
    return (
        select(deliveries.c.id)
        .where(*conditions)
        .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
        .limit(bindparam("limit", type_=Integer))
        .with_for_update(skip_locked=True)
    )


@functools.cache
def _sqlite_due_ids(lane: Lane, excluding: bool) -> Any:
    due = _due(lane, excluding).subquery()
    return select(func.json_group_array(due.c.id))


_SQLITE_LEASE = (
    "UPDATE deliveries SET lease_owner = ?, lease_expires_at = ? WHERE id IN (SELECT value FROM json_each(?))"
)
_SQLITE_LEASED = (
    f"SELECT json_group_array(json_array({', '.join(c.name for c in _COLUMNS)})) "
    "FROM deliveries WHERE id IN (SELECT value FROM json_each(?))"
)
_AT = {c.name: i for i, c in enumerate(_COLUMNS)}


def _claim_sqlite(tx: Tx, statement: Any, params: dict[str, Any]) -> list[QueuedDelivery]:
    """The claim in three statements of one step each, rows as one JSON array.

    ``UPDATE ... RETURNING`` hands back one row per step, and the sqlite3 module lets go of the GIL
    around every step: with the worker's loop busy sending, each row waited to win it back, and
    a claim of 200 rows took 20-40 ms instead of 3 (bench/throughput), while endpoints ran dry.
    The write lock is held from the first statement (SQLite's transactions here begin IMMEDIATE),
    so the rows read are the rows leased.
    """
    ids = tx.execute(statement, params).scalar_one()
    if ids == "[]":
        return []
    tx.exec_driver_sql(_SQLITE_LEASE, (params["owner"], _sqlite_time(params["lease_until"]), ids))
    found = orjson.loads(tx.exec_driver_sql(_SQLITE_LEASED, (ids,)).scalar_one())
    next_at, created, ordered, is_test = (
        _AT["next_attempt_at"],
        _AT["created_at"],
        _AT["ordered"],
        _AT["is_test"],
    )
    for row in found:  # as the driver and the column types would hand them back
        row[next_at] = _sqlite_moment(row[next_at])
        row[created] = _sqlite_moment(row[created])
        row[ordered] = bool(row[ordered])
        row[is_test] = bool(row[is_test])
    return _leased(found)


def claim(
    tx: Tx,
    *,
    owner: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    lane: Lane,
    exclude_endpoints: Iterable[str] = (),
) -> list[QueuedDelivery]:
    """Lease up to ``limit`` due deliveries of one lane (first attempts or retries), oldest due first.

    The lane's partial index yields rows in (next_attempt_at, id) order, so the claim reads from the
    oldest due row and stops at ``limit``; the other conditions are checked per candidate row
    (blocked origins once per statement, paused signal and order by primary-key/index lookups).
    """
    excluded = sorted(set(exclude_endpoints))
    params: dict[str, Any] = {"now": now, "limit": limit, "owner": owner, "lease_until": lease_until}
    if excluded:
        params["excluded"] = excluded
    if tx.dialect.name == "sqlite":
        return _claim_sqlite(tx, _sqlite_due_ids(lane, bool(excluded)), params)
    return _leased(tx.execute(_claim_statement(lane, bool(excluded)), params))


@functools.cache
def _probe_statement(due_only: bool, postgres: bool) -> Any:
    now: BindParameter[datetime] = bindparam("now", type_=deliveries.c.next_attempt_at.type)
    due = select(deliveries.c.id).where(
        deliveries.c.endpoint == bindparam("origin"),
        text(UNFINISHED_SQL),  # walks ix_deliveries_unfinished_endpoint in id order
        lease_free(now),
        _signal_usable(),  # a paused signal's delivery probed and was sent although paused
        or_(deliveries.c.ordered.is_(False), not_(_EARLIER_UNFINISHED)),
    )
    if due_only:
        due = due.where(or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= now))
    locked = due.order_by(deliveries.c.id).limit(1).with_for_update(skip_locked=True)
    return _lease_statement(locked, postgres=postgres)


def claim_probe(
    tx: Tx, *, origin: str, owner: str, now: datetime, lease_until: datetime
) -> QueuedDelivery | None:
    """Lease the one delivery that probes an endpoint whose circuit is half-open (held rows included):
    the oldest that is due, else the oldest. A failed probe puts its delivery's next try off, so
    the next probe takes another: always the oldest, one message the receiver refuses (a 500 for
    a value it cannot parse) kept the circuit open for every other delivery until its max_age."""
    params = {"now": now, "origin": origin, "owner": owner, "lease_until": lease_until}
    for due_only in (True, False):
        found = _leased(tx.execute(_probe_statement(due_only, tx.dialect.name == "postgresql"), params))
        if found:
            return found[0]
    return None


def _lease_statement(due: Any, *, postgres: bool = True) -> Any:
    return (
        update(deliveries)
        .where(_among(due, postgres))
        .values(
            lease_owner=bindparam("owner", type_=String),
            lease_expires_at=bindparam("lease_until", type_=deliveries.c.lease_expires_at.type),
        )
        .returning(*_COLUMNS)
    )


def _among(ids: Any, postgres: bool) -> ColumnElement[bool]:
    """``deliveries.id`` among the rows ``ids`` (a locking SELECT) finds, which runs once.

    On PostgreSQL as ``id = ANY(ARRAY(...))``, an InitPlan: ``id IN (...)`` let the planner join
    the subquery, and with statistics from when the queue was all delivered (one row expected)
    it chose a nested loop that ran the LIMITed, locking subquery again for every row of
    ``deliveries``. Two workers' claims ran at 100 % CPU for minutes while nothing was sent
    (bench/throughput, 20,000 rows), and a claim of 50 leased every due row, past its LIMIT
    (tests/integration/test_queue_plans.py). SQLite has no arrays and never plans it so.
    """
    if not postgres:
        return deliveries.c.id.in_(ids.scalar_subquery())
    found = func.array(ids.scalar_subquery(), type_=PG_ARRAY(deliveries.c.id.type))
    return deliveries.c.id == any_(found)


def _leased(rows: Any) -> list[QueuedDelivery]:
    found = [_queued(r) for r in rows]
    found.sort(key=lambda d: (d.next_attempt_at or d.created_at, d.id))
    return found


def renew_leases(tx: Tx, ids: Sequence[int], *, owner: str, lease_until: datetime) -> list[int]:
    """Extend this worker's leases (long batches, slow endpoints); the ids it still held.

    On PostgreSQL a row another transaction holds is passed over: it is the worker's own recorder
    finishing it (which needs no lease), and waiting for it deadlocked with that transaction."""
    if not ids:
        return []
    mine = select(deliveries.c.id).where(deliveries.c.id.in_(list(ids)), deliveries.c.lease_owner == owner)
    postgres = tx.dialect.name == "postgresql"
    if postgres:
        mine = mine.order_by(deliveries.c.id).with_for_update(skip_locked=True)
    done = tx.execute(
        update(deliveries)
        .where(_among(mine, postgres))
        .values(lease_expires_at=lease_until)
        .returning(deliveries.c.id)
    )
    return list(done.scalars())


def release(tx: Tx, ids: Sequence[int], *, owner: str) -> int:
    """Give leased rows back unsent (throttled or circuit opened, or shutting down): no attempt burnt."""
    if not ids:
        return 0
    done = tx.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(list(ids)), deliveries.c.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )
    return int(done.rowcount)


def hold_endpoint(tx: Tx, origin: str, now: datetime) -> int:
    """Mark an open circuit's waiting deliveries ``held`` (leased, in-flight rows finish on their own)."""
    done = tx.execute(
        update(deliveries)
        .where(
            deliveries.c.endpoint == origin,
            text(UNFINISHED_SQL),  # the partial index's own term, so SQLite uses it too
            deliveries.c.status.in_(CLAIMABLE),
            lease_free(now),
        )
        .values(status="held", lease_owner=None, lease_expires_at=None, updated_at=now)
    )
    return int(done.rowcount)


def unhold_endpoint(tx: Tx, origin: str, now: datetime) -> int:
    """The circuit closed: held deliveries go back to their lane, due at once."""
    done = tx.execute(
        update(deliveries)
        .where(deliveries.c.endpoint == origin, text(UNFINISHED_SQL), deliveries.c.status == "held")
        .values(
            status=case((deliveries.c.attempt_count == 0, "pending"), else_="retrying"),
            next_attempt_at=now,
            updated_at=now,
        )
    )
    return int(done.rowcount)


def record_outcomes(
    tx: Tx,
    attempt_rows: Sequence[AttemptRow],
    finishes: Sequence[Finish],
    *,
    now: datetime,
    owner: str | None = None,
) -> set[int]:
    """Write many finished attempts at once: their attempts in one insert, their rows in one update.

    Many rows per statement, never one statement per row: SQLite's ``executemany`` steps once per
    row and lets go of the GIL around each step, and with the worker's loop busy sending each step
    waited to win it back (200 outcomes took 40-50 ms, holding the write lock the next claim
    needed; bench/throughput). On PostgreSQL the rows travel as one JSON document per statement:
    orjson writes it in C, where psycopg's array parameters were escaped element by element in
    Python (15 % of the worker's GIL time, bench/throughput). A delivery finished twice in one
    batch is written in rounds, in order, so each round names a row once.

    With ``owner`` (the worker that sent them), a delivery is finished only while that worker
    still holds its lease. One that lost it (stopped or cut off longer than the lease) while
    another worker took the delivery over and finished it wrote its stale outcome over the other's:
    a delivered message went back to ``retrying`` and was sent again, after later events of the
    same result. Its attempt is still logged (the request went out), with a hint saying so.
    Returns the ids of such deliveries (nothing of theirs but the attempt was written).
    """
    sqlite = tx.dialect.name == "sqlite"
    moment: Callable[[datetime | None], object] = _sqlite_time if sqlite else _pg_time
    as_json: Callable[[dict[str, str]], object] = _json if sqlite else _same
    written: set[int] = set()
    for number, batch in enumerate(_rounds(finishes)):
        if number == 0:
            statement = _UPDATE_DELIVERIES if owner is None else _UPDATE_LEASED_DELIVERIES
        else:  # rows this transaction finished in an earlier round: their lease is cleared now
            batch = [f for f in batch if owner is None or f.delivery_id in written]
            statement = _UPDATE_DELIVERIES
        rows = [_finish_values(f, moment, owner) for f in batch]
        written.update(_write_rows(tx, sqlite, statement, rows, moment(now)))
    lost = {f.delivery_id for f in finishes} - written if owner is not None else set()
    shown = [_lost_attempt(a) if a.delivery_id in lost else a for a in attempt_rows]
    _write_rows(tx, sqlite, _INSERT_ATTEMPTS, [_attempt_values(a, moment, as_json) for a in shown])
    return lost


LOST_LEASE_HINT = (
    "This worker's lease on the delivery had run out (it was stopped, or cut off from the "
    "database, for longer than QHOOK_LEASE_SECONDS) and another worker had taken it over: this "
    "attempt's outcome was not written; the delivery's status is the other worker's."
)


def _lost_attempt(a: AttemptRow) -> AttemptRow:
    return replace(a, hint=f"{LOST_LEASE_HINT} {a.hint or ''}".strip())


def _attempt_values(
    a: AttemptRow,
    moment: Callable[[datetime | None], object],
    as_json: Callable[[dict[str, str]], object],
) -> tuple[object, ...]:
    return (
        a.delivery_id,
        a.number,
        a.trigger,
        moment(a.started_at),
        a.duration_ms,
        as_json(a.request_headers),
        a.status_code,
        as_json(a.response_headers) if a.response_headers is not None else None,
        a.response_body,
        a.error_kind,
        a.error,
        a.hint,
        a.url,
    )


def _finish_values(
    f: Finish, moment: Callable[[datetime | None], object], owner: str | None
) -> tuple[object, ...]:
    return (
        f.delivery_id,
        f.status,
        f.attempt_count,
        moment(f.next_attempt_at),
        f.last_status_code,
        f.last_error_kind,
        f.hint,
        moment(f.delivered_at),
        owner,
        f.probe_failures,
    )


ROWS_PER_STATEMENT = 256  # 12 parameters a row on SQLite: far below its 32,766 per statement
_ATTEMPT_TYPES = {c.name: c.type for c in attempts.columns if c.name != "id"}
_FINISH_TYPES = {
    "b_id": deliveries.c.id.type,
    "b_status": deliveries.c.status.type,
    "b_attempt_count": deliveries.c.attempt_count.type,
    "b_next": deliveries.c.next_attempt_at.type,
    "b_code": deliveries.c.last_status_code.type,
    "b_kind": deliveries.c.last_error_kind.type,
    "b_hint": deliveries.c.hint.type,
    "b_delivered": deliveries.c.delivered_at.type,
    "b_owner": deliveries.c.lease_owner.type,
    "b_probe_failures": deliveries.c.probe_failures.type,
}
_KEEP = "deliveries.status = 'cancelled' AND b.b_status <> 'succeeded'"
_ATTEMPT_NAMES = ", ".join(f'"{c}"' for c in _ATTEMPT_TYPES)  # quoted: "trigger" is an SQL keyword
_INSERT_ATTEMPTS = (f"INSERT INTO attempts ({_ATTEMPT_NAMES}) SELECT * FROM {{rows}}", _ATTEMPT_TYPES)
# A row cancelled while in flight (its signal was removed) stays cancelled unless delivered.
_UPDATE_DELIVERIES_SQL = (
    f"UPDATE deliveries SET status = CASE WHEN {_KEEP} THEN 'cancelled' ELSE b.b_status END, "
    "attempt_count = b.b_attempt_count, "
    f"next_attempt_at = CASE WHEN {_KEEP} THEN NULL ELSE b.b_next END, "
    "last_status_code = b.b_code, last_error_kind = b.b_kind, "
    f"hint = CASE WHEN {_KEEP} THEN deliveries.hint ELSE b.b_hint END, "
    "delivered_at = COALESCE(b.b_delivered, deliveries.delivered_at), "
    "probe_failures = COALESCE(b.b_probe_failures, deliveries.probe_failures), "
    "lease_owner = NULL, lease_expires_at = NULL, next_trigger = 'scheduled', "
    "updated_at = {now} FROM {rows} WHERE deliveries.id = b.b_id{fence} RETURNING deliveries.id"
)
_UPDATE_DELIVERIES = (_UPDATE_DELIVERIES_SQL.replace("{fence}", ""), _FINISH_TYPES)
# Only while the worker still holds the lease (see record_outcomes).
_UPDATE_LEASED_DELIVERIES = (
    _UPDATE_DELIVERIES_SQL.replace("{fence}", " AND deliveries.lease_owner = b.b_owner"),
    _FINISH_TYPES,
)


def _write_rows(
    tx: Tx,
    sqlite: bool,
    statement: tuple[str, dict[str, Any]],
    rows: Sequence[tuple[object, ...]],
    now: object = None,
) -> list[int]:
    """Run ``statement`` with ``rows`` as the table ``b`` (and ``now`` for its ``{now}``), at most
    ``ROWS_PER_STATEMENT`` rows a time: on SQLite a VALUES list, on PostgreSQL one JSON document
    read by ``json_to_recordset`` (one text for any count). Returns what a RETURNING gives."""
    returned: list[int] = []
    start = 0
    while start < len(rows):
        size = min(len(rows) - start, ROWS_PER_STATEMENT)
        if sqlite:
            # Row counts in powers of two: SQLite's text changes with the count, and every
            # connection keeps up to 128 prepared statements; any count at all grew a worker by
            # tens of MB of cached VALUES lists (bench/throughput, peak RSS).
            size = 1 << (size.bit_length() - 1)
        returned += _write_chunk(tx, sqlite, statement, rows[start : start + size], now)
        start += size
    return returned


def _write_chunk(
    tx: Tx,
    sqlite: bool,
    statement: tuple[str, dict[str, Any]],
    rows: Sequence[tuple[object, ...]],
    now: object,
) -> list[int]:
    template, types = statement
    if sqlite:
        flat = tuple(value for row in rows for value in row)
        # Positional parameters, in the order of the text.
        now_first = template.find("{now}") in range(0, template.find("{rows}"))
        params = ((now, *flat) if now_first else (*flat, now)) if "{now}" in template else flat
        done = tx.exec_driver_sql(
            template.format(rows=_sqlite_values(tuple(types), len(rows)), now="?"), params
        )
        return [row[0] for row in done] if done.returns_rows else []
    names = tuple(types)
    # JSON null is SQL NULL for every column type of json_to_recordset, jsonb columns included.
    document = orjson.dumps(
        [dict(zip(names, row, strict=True)) for row in rows], option=orjson.OPT_NON_STR_KEYS
    )
    table = _pg_recordset(tx.dialect, names, tuple(types.values()))
    done = tx.exec_driver_sql(
        template.format(rows=table, now="%(now)s"), {"rows": document.decode(), "now": now}
    )
    return [row[0] for row in done] if done.returns_rows else []


@functools.cache  # at most 2 tables x 9 powers of two
def _sqlite_values(names: tuple[str, ...], count: int) -> str:
    row = "(" + ", ".join("?" * len(names)) + ")"
    return f"(WITH b({', '.join(names)}) AS (VALUES {', '.join([row] * count)}) SELECT * FROM b) AS b"


@functools.cache
def _pg_recordset(dialect: Dialect, names: tuple[str, ...], types: tuple[Any, ...]) -> str:
    columns = ", ".join(
        f"{name} {type_.compile(dialect=dialect)}" for name, type_ in zip(names, types, strict=True)
    )
    return f"json_to_recordset(CAST(%(rows)s AS json)) AS b({columns})"


def _rounds(finishes: Sequence[Finish]) -> list[list[Finish]]:
    """``finishes`` in order, split so that no delivery appears twice in one round."""
    rounds: list[list[Finish]] = []
    seen: dict[int, int] = {}
    for f in finishes:
        n = seen.get(f.delivery_id, 0)
        seen[f.delivery_id] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(f)
    return rounds


def _same(value: dict[str, str]) -> dict[str, str]:
    return value


def _json(value: dict[str, str]) -> str:
    # NON_STR_KEYS also takes str subclasses (aiohttp's header names are multidict ``istr``).
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _sqlite_time(value: datetime | None) -> str | None:
    """As ``types.UTCDateTime`` stores it on SQLite: naive UTC text that sorts in time order."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    v = value.astimezone(UTC)
    day = f"{v.year:04d}-{v.month:02d}-{v.day:02d}"
    return f"{day} {v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"


def _sqlite_moment(value: str | None) -> datetime | None:
    """As ``types.UTCDateTime`` reads it back on SQLite."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _pg_time(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value


_SEND_SIGNALS = (
    select(
        signals.c.id,
        signals.c.workflow_id,
        signals.c.config,
        signals.c.secret_enc,
        signals.c.previous_secret_enc,
        signals.c.previous_secret_until,
        signals.c.paused_reason,
        signals.c.active,
        workflows.c.error_email,
    )
    .join(workflows, workflows.c.id == signals.c.workflow_id)
    .where(signals.c.id.in_(bindparam("ids", expanding=True)))
)  # built once: it runs with every claim


def send_signals(tx: Tx, signal_ids: Iterable[int]) -> dict[int, SendSignal]:
    """Signal configs and encrypted secrets for a batch, with the workflow's error e-mail and when
    each signal's auth profile last changed."""
    ids = sorted(set(signal_ids))
    if not ids:
        return {}
    rows = tx.execute(_SEND_SIGNALS, {"ids": ids}).all()
    profile_ids = {_profile_id(r.config) for r in rows} - {None}
    changed: dict[int, datetime] = {}
    if profile_ids:
        changed = dict(
            tx.execute(
                select(auth_profiles.c.id, auth_profiles.c.updated_at).where(
                    auth_profiles.c.id.in_(sorted(profile_ids))
                )
            ).all()
        )
    found: dict[int, SendSignal] = {}
    for r in rows:
        profile_id = _profile_id(r.config)
        found[r.id] = SendSignal(
            r.id,
            r.workflow_id,
            dict(r.config or {}),
            r.secret_enc,
            r.previous_secret_enc,
            r.previous_secret_until,
            r.paused_reason,
            bool(r.active),
            r.error_email,
            changed.get(profile_id) if profile_id is not None else None,
        )
    return found


def _profile_id(config: dict[str, Any] | None) -> int | None:
    value = (config or {}).get("auth_profile_id")
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def pause_signal(tx: Tx, signal_id: int, reason: str) -> None:
    """Stop a signal (e.g. 410 Gone); its waiting deliveries stay, unclaimed, until it is resumed."""
    definitions.changed(tx)  # the workflow's signals are part of its definition
    tx.execute(
        update(signals)
        .where(signals.c.id == signal_id, signals.c.paused_reason.is_(None))
        .values(paused_reason=reason)
    )


def notify(tx: Tx) -> None:
    """Wake ``qhook worker`` processes on PostgreSQL (delivered at commit); a no-op on SQLite."""
    if tx.dialect.name == "postgresql":
        tx.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))


EXACT_HISTORY_ROWS = 100_000
"""Above this many rows PostgreSQL reports finished statuses from its statistics (see depth_by_status)."""


def depth_by_status(tx: Tx) -> dict[str, int]:
    """Deliveries per status for /metrics, read at every scrape.

    The queue itself (pending, retrying, held) is counted exactly: the (status, id) index walks only
    the backlog. The finished statuses are the whole history and grow without end, so on
    PostgreSQL past ``EXACT_HISTORY_ROWS`` rows they come from the planner's statistics (row count
    times the status's frequency, refreshed by autovacuum's ANALYZE) instead of a count of
    millions of index entries on each scrape. SQLite counts them exactly (a covering index).
    """
    rows = tx.execute(
        select(deliveries.c.status, func.count()).where(text(UNFINISHED_SQL)).group_by(deliveries.c.status)
    )
    found = {str(status): int(count) for status, count in rows}
    estimated = _finished_estimate(tx) if tx.dialect.name == "postgresql" else None
    if estimated is None:
        rows = tx.execute(
            select(deliveries.c.status, func.count())
            .where(deliveries.c.status.not_in(UNFINISHED))
            .group_by(deliveries.c.status)
        )
        estimated = {str(status): int(count) for status, count in rows}
    return {**found, **estimated}


def _finished_estimate(tx: Tx) -> dict[str, int] | None:
    """Finished statuses from pg_class/pg_stats; None when the table is small or not analysed yet."""
    row = tx.execute(
        text(
            "SELECT c.reltuples, s.most_common_vals::text::text[], s.most_common_freqs "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname "
            "AND s.attname = 'status' "
            "WHERE c.oid = to_regclass('deliveries')"
        )
    ).one_or_none()
    if row is None or row[1] is None or row[0] < EXACT_HISTORY_ROWS:
        return None
    total, values, freqs = float(row[0]), row[1], row[2]
    return {str(v): round(total * f) for v, f in zip(values, freqs, strict=True) if v not in UNFINISHED}


def next_due_after(tx: Tx, now: datetime) -> datetime | None:
    """The earliest ``next_attempt_at`` after ``now`` of a waiting row in either lane (or None):
    when an idle worker has something to look for (the start of each lane's partial index)."""
    return _earliest(tx, deliveries.c.next_attempt_at > now)


def oldest_due(tx: Tx, now: datetime) -> datetime | None:
    """The earliest ``next_attempt_at`` of a pending or retrying row already due (or None): how
    long the queue's oldest due delivery has waited (a stuck worker, a paused signal)."""
    return _earliest(tx, deliveries.c.next_attempt_at <= now)


def _earliest(tx: Tx, condition: ColumnElement[bool]) -> datetime | None:
    found = []
    for lane_sql in (DUE_FIRST_SQL, DUE_RETRY_SQL):
        query = (
            select(deliveries.c.next_attempt_at)
            .where(text(lane_sql), condition)
            .order_by(deliveries.c.next_attempt_at)
            .limit(1)
        )
        moment = tx.execute(query).scalar()
        if moment is not None:
            found.append(moment)
    return min(found, default=None)


def delivery_by_id(tx: Tx, delivery_id: int) -> QueuedDelivery | None:
    row = tx.execute(select(*_COLUMNS).where(deliveries.c.id == delivery_id)).one_or_none()
    return _queued(row) if row else None


def listen(
    db: Database,
    on_notify: Callable[[], None],
    stop: threading.Event,
    *,
    skip_own: Callable[[], bool] = lambda: False,
) -> None:
    """Call ``on_notify`` for each NOTIFY on the deliveries channel until ``stop`` (PostgreSQL; a thread).

    While ``skip_own()`` is true, NOTIFYs sent by ``db``'s own connections are passed over: every
    commit of this process that queues work already woke its worker directly, and the second
    wake-up only made it claim again and find nothing (a third of the claims of ``qhook serve``).
    Behind PgBouncer a connection's backend pid is PgBouncer's own: nothing matches, nothing is
    skipped. A lost connection is reopened after a pause; polling covers the gap.
    """
    while not stop.is_set():
        try:
            raw = db.engine.raw_connection()
        except Exception:
            stop.wait(1.0)
            continue
        try:
            conn = raw.driver_connection
            conn.autocommit = True  # type: ignore[union-attr]
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")  # type: ignore[union-attr]
            while not stop.is_set():
                for notice in conn.notifies(timeout=0.5):  # type: ignore[union-attr]
                    if notice.pid in db.backend_pids and skip_own():
                        continue
                    on_notify()
        except Exception:
            stop.wait(1.0)
        finally:
            with contextlib.suppress(Exception):
                raw.invalidate()  # never hand a LISTENing connection back to the pool


# Rows a table may grow by beyond twice the count its statistics recorded before they count as
# outgrown: an empty queue's first burst qualifies, everyday growth never.
STATISTICS_SLACK_ROWS = 500
# pg_try_advisory_xact_lock key: "qhook analyze" (one worker analyses at a time).
ANALYZE_LOCK = 0x71686F6F6B616E61


def statistics_outgrown(recorded_rows: float, live_rows: int) -> bool:
    """Whether a table has ``live_rows`` now, more than twice the ``recorded_rows`` its planner
    statistics were taken with (PostgreSQL's ``reltuples``: -1 before any) and
    ``STATISTICS_SLACK_ROWS`` more at least."""
    return live_rows > 2 * max(recorded_rows, 0) + STATISTICS_SLACK_ROWS


def refresh_statistics(db: Database, *, due: bool = False) -> bool:
    """Keep the planner's statistics of deliveries current; True when they were taken again:
    when ``due`` (SQLite: the worker's first tick, then every 10 minutes) or when the table has
    outgrown them (``statistics_outgrown``; the worker looks every second on PostgreSQL, every
    10 s on SQLite).

    Plans made from statistics of a smaller table stay in use as the queue fills. SQLite planned
    a claim on the statistics of an empty queue (the worker's first look on a fresh database) by
    sorting every waiting row: 20 ms a claim of 200 at 20,000 waiting, against 3.6 ms from its
    lane's index. PostgreSQL's autovacuum analyses the table, but only a minute or so after it
    changed, and meanwhile each connection keeps the generic plans it made for the table as it
    was: psycopg prepares a statement run five times, and a worker polling an empty queue planned
    its claim for an empty table. Once 20,000 deliveries arrived each claim of 200 read the whole
    primary key (50 ms a claim, growing with the table; the outcome update hash-joined the whole
    table) until that ANALYZE (bench/throughput: 930-2,100 deliveries/s instead of ~3,000).

    The rows now: PostgreSQL's count of committed rows (``n_live_tup``, sent by each backend
    within 1-10 s of its commit) against the statistics' ``reltuples``; SQLite's id range (two
    lookups) against the rows its last ANALYZE counted. Not the file's size: it grows while a large
    insert is still uncommitted, and statistics taken then count its pages but none of its rows,
    the worst of both. An ANALYZE makes every connection plan again. Planning every statement
    afresh instead (PostgreSQL's ``plan_cache_mode``) cost the database 40 % more CPU a delivery:
    each attempt's foreign key check was planned again.
    """
    with db.engine.connect() as conn:
        if db.is_sqlite:
            if not due and not statistics_outgrown(*_sqlite_rows(conn)):
                return False
            conn.exec_driver_sql("PRAGMA analysis_limit=1000")
            conn.exec_driver_sql("ANALYZE deliveries")
            conn.commit()
            return True
        with conn.begin():
            recorded, live = conn.execute(
                text(
                    "SELECT c.reltuples, s.n_live_tup FROM pg_class c"
                    " JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = 'deliveries'::regclass"
                )
            ).one()
            if not statistics_outgrown(float(recorded), int(live)):
                return False
            if not conn.execute(select(func.pg_try_advisory_xact_lock(ANALYZE_LOCK))).scalar_one():
                return False  # another worker is taking them
            conn.exec_driver_sql("ANALYZE deliveries")
        return True


def _sqlite_rows(conn: Tx) -> tuple[float, int]:
    """(rows SQLite's last ANALYZE counted, -1 before any; rows now at most, from the id range).
    The count is that of an index on every row (``sqlite_stat1``'s first number); the id range
    counts deleted rows in between too, which at worst costs a bounded ANALYZE at each look."""
    try:
        stat = conn.exec_driver_sql(
            "SELECT stat FROM sqlite_stat1 WHERE tbl = 'deliveries' AND idx = 'ix_deliveries_created_at'"
        ).scalar()
    except DBAPIError:  # no sqlite_stat1 before the first ANALYZE
        conn.rollback()
        stat = None
    recorded = float(str(stat).split()[0]) if stat else -1.0
    low, high = conn.exec_driver_sql("SELECT min(id), max(id) FROM deliveries").one()
    conn.rollback()
    return recorded, (int(high) - int(low) + 1) if high is not None else 0
