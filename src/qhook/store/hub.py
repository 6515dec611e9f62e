"""The Integration Hub's queries: the delivery log, requeue and cancel, endpoint pause, retention.

Every list walks an index in id order (keyset pagination, newest first), or in (created_at, id)
order with since/until; a body search goes through store/search_index.py on SQLite and the
bodies' copy in delivery_search on PostgreSQL (migration 0003). See
tests/integration/test_hub_plans.py for the plans. Endpoint health and stats live in
``store/hub_stats.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    MetaData,
    Select,
    Table,
    Text,
    and_,
    bindparam,
    case,
    delete,
    exists,
    false,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BindParameter, UnaryExpression
from sqlalchemy.sql.visitors import replacement_traverse

from qhook.domain.urls import origin_or_none
from qhook.store import search_index
from qhook.store.db import Tx
from qhook.store.queue import lease_free
from qhook.store.tables import attempts, deliveries, endpoint_log, endpoints, events, signals

STATUSES = ("pending", "retrying", "held", "succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """What the Hub narrows the log by; ``set_ids`` is the asker's set restriction (None: all)."""

    statuses: tuple[str, ...] = ()
    workflow_id: int | None = None
    signal_id: int | None = None
    set_id: int | None = None
    result_id: int | None = None
    endpoint: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None
    set_ids: frozenset[int] | None = None
    event_id: int | None = None  # the internal id; people give the evt_ uid, resolved before


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One line of the Hub's log (everything but the body)."""

    id: int
    webhook_id: str
    status: str
    workflow_id: int | None
    signal_id: int | None
    set_id: int | None
    result_id: int | None
    event_id: int | None
    action: str
    url: str
    endpoint: str
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error_kind: str | None
    hint: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    next_trigger: str
    lease_expires_at: datetime | None
    is_test: bool = False  # a "send test" (issue 6): sent once, never retried
    event_uid: str | None = None  # "evt_...", the id receivers get in the envelope


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    id: int
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
    url: str | None = None  # where it went; None: made before qhook kept it (the delivery's url)


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    origin: str
    paused: bool
    throttled_until: datetime | None
    circuit_state: str
    circuit_opened_at: datetime | None
    updated_at: datetime
    rate_limit: str | None = None  # per-host limits, over the signals' own
    max_in_flight: int | None = None


_COLUMNS = (
    deliveries.c.id,
    deliveries.c.webhook_id,
    deliveries.c.status,
    deliveries.c.workflow_id,
    deliveries.c.signal_id,
    deliveries.c.set_id,
    deliveries.c.result_id,
    deliveries.c.event_id,
    deliveries.c.action,
    deliveries.c.url,
    deliveries.c.endpoint,
    deliveries.c.attempt_count,
    deliveries.c.next_attempt_at,
    deliveries.c.last_status_code,
    deliveries.c.last_error_kind,
    deliveries.c.hint,
    deliveries.c.created_at,
    deliveries.c.updated_at,
    deliveries.c.delivered_at,
    deliveries.c.next_trigger,
    deliveries.c.lease_expires_at,
    deliveries.c.is_test,
)


def _delivery(row: Any) -> DeliveryRecord:
    return DeliveryRecord(*(getattr(row, c.name) for c in _COLUMNS))


def _with_uids(tx: Tx, rows: list[DeliveryRecord]) -> list[DeliveryRecord]:
    """Add each event's public uid (one primary-key lookup for the page, not a join in the plan)."""
    wanted = sorted({r.event_id for r in rows if r.event_id is not None})
    if not wanted:
        return rows
    uids = {i: u for i, u in tx.execute(select(events.c.id, events.c.uid).where(events.c.id.in_(wanted)))}
    return [replace(r, event_uid=uids.get(r.event_id)) if r.event_id is not None else r for r in rows]


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _conditions(
    tx: Tx, f: DeliveryFilter, *, by_key: bool = False, below: int | None = None
) -> list[ColumnElement[bool]]:
    """The filters as SQL terms; ``by_key``: none of them may lead SQLite to an index (see _among);
    ``below``: the page's id cursor, which PostgreSQL's body search repeats on its own table."""
    c = _Unindexed(deliveries) if by_key else deliveries.c
    found: list[ColumnElement[bool]] = []
    if f.statuses:
        found.append(c.status == f.statuses[0] if len(f.statuses) == 1 else c.status.in_(f.statuses))
    for column, value in (
        (c.workflow_id, f.workflow_id),
        (c.signal_id, f.signal_id),
        (c.set_id, f.set_id),
        (c.result_id, f.result_id),
        (c.endpoint, f.endpoint),
        (c.action, f.action),
        (c.event_id, f.event_id),
    ):
        if value is not None:
            found.append(column == value)
    if f.since is not None:
        found.append(c.created_at >= f.since)
    if f.until is not None:
        found.append(c.created_at < f.until)
    if f.q:
        pattern = _like_pattern(f.q)
        # SQLite's LIKE is case-insensitive for ASCII already (its body index is
        # store/search_index.py, see _search). PostgreSQL: ILIKE on the bodies' copy, which its
        # trigram index serves (migration 0003); deliveries.body has no index to keep updated.
        if tx.dialect.name == "postgresql":
            found.append(_pg_search(pattern, below))
        else:
            found.append(c.body.like(pattern, escape="\\"))
    if f.set_ids is not None:
        found.append(c.set_id.in_(sorted(f.set_ids)))
    return found


# PostgreSQL's copy of every body (migration 0003; not in tables.py: autogenerate leaves it alone).
_PG_SEARCH = Table(
    "delivery_search", MetaData(), Column("id", BigInteger, primary_key=True), Column("body", Text)
)


def _pg_search(pattern: str, below: int | None) -> ColumnElement[bool]:
    """The deliveries whose body's copy matches (ILIKE, as the body itself would).

    A common needle is a merge join walking both primary keys down from the cursor; the planner
    bounds only the side the cursor names (not the other through the join), so without ``below``
    here it read delivery_search from its top to the cursor (770 ms in the middle of 1,000,000).

    The pattern goes into the SQL as a literal (as every value of a list does, see ``_inlined``):
    a generic plan for any needle walked created_at probing every row of a 30-day window for a
    rare batch number (820 ms, p95 of bench hub at 1,000,000 rows).
    """
    search = _PG_SEARCH.c
    needle = bindparam("q_pattern", pattern, type_=Text, literal_execute=True)
    matching = select(search.id).where(search.body.ilike(needle, escape="\\"))
    if below is not None:
        matching = matching.where(search.id < below)
    return deliveries.c.id.in_(matching)


class _Unindexed:
    """``table.c`` as ``+column``: the same values, but SQLite uses no index for a term on them
    (its documented way to disqualify a WHERE or ORDER BY term from index use)."""

    def __init__(self, table: Any) -> None:
        self._columns = table.c

    def __getattr__(self, name: str) -> Any:
        column = getattr(self._columns, name)
        return UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)


def _time_ranged(f: DeliveryFilter) -> bool:
    return f.since is not None or f.until is not None


def list_query(tx: Tx, f: DeliveryFilter, *, limit: int, before_id: int | None = None) -> Select[Any]:
    """The page query (exposed so the plan test can EXPLAIN exactly what the Hub runs).

    Newest first by id; with since/until newest first by (created_at, id) instead. The best
    index for a time range yields rows in created_at order, and any id order would mean reading
    the whole window (the top ids of 500,000 rows for 30 days of a million) or every row after it
    (a walk down the primary key), because nothing ties ids to times strictly. By time, a page is
    one short walk down the created_at index (SQLite's indexes end in the rowid; PostgreSQL adds
    an incremental sort on id within equal times) wherever the window lies and however wide.
    With since/until and a cursor, this looks up the cursor row's time first.
    """
    if not _time_ranged(f):
        conditions = _conditions(tx, f, below=before_id)
        if before_id is not None:
            conditions.append(deliveries.c.id < before_id)
        return select(*_COLUMNS).where(*conditions).order_by(deliveries.c.id.desc()).limit(limit)
    f, after = _after_in_time(tx, f, before_id)
    # A search in a time range on PostgreSQL is a semi-join with delivery_search, which its
    # planner costs well either way round (1,000,000 rows, 30 days): a rare needle takes the
    # trigram index and sorts its few rows (10 ms), a common one walks created_at and probes
    # delivery_search by key (1 ms). (With the body index on deliveries itself it walked the
    # window testing ILIKE on every row for a rare needle; forcing the index there instead made
    # a common needle sort the window, 3.5 s.)
    query = select(*_COLUMNS).where(*_conditions(tx, f), *after).order_by(*_BY_TIME)
    return query.limit(limit)


_BY_TIME = (deliveries.c.created_at.desc(), deliveries.c.id.desc())


def _after_in_time(
    tx: Tx, f: DeliveryFilter, before_id: int | None, *, by_key: bool = False
) -> tuple[DeliveryFilter, list[ColumnElement[bool]]]:
    """The filter and extra terms for the rows after the cursor's in (created_at, id) order.

    The cursor carries an id; its time is looked up (should the row have been purged meanwhile,
    the time of the next lower id stands in). That time becomes the range's upper bound in place
    of ``until`` when earlier: SQLite bounds an index range by one upper term only, and with
    both it walked from ``until`` down to the cursor (55 ms for a page in the middle of a month).
    """
    if before_id is None:
        return f, []
    d = deliveries.c
    at = tx.execute(select(d.created_at).where(d.id == before_id)).scalar()
    if at is None:
        at = tx.execute(select(d.created_at).where(d.id < before_id).order_by(d.id.desc()).limit(1)).scalar()
    if at is None:
        return f, [false()]  # nothing older
    if f.until is not None and at >= f.until:
        return f, []  # every row before ``until`` comes after the cursor
    c = _Unindexed(deliveries) if by_key else d
    return replace(f, until=None), [c.created_at <= at, or_(c.created_at < at, d.id < before_id)]


def list_deliveries(
    tx: Tx, f: DeliveryFilter, *, limit: int, before_id: int | None = None
) -> list[DeliveryRecord]:
    """Newest first (by time with since/until); pass the last id of a page as ``before_id``."""
    if search_index.usable(tx, f.q):
        rows = _search(tx, f, limit=limit, before_id=before_id)
    elif f.q and tx.dialect.name == "postgresql":
        rows = _fetch(tx, _inlined(list_query(tx, f, limit=limit, before_id=before_id)))
    else:
        rows = _fetch(tx, list_query(tx, f, limit=limit, before_id=before_id))
    return _with_uids(tx, rows)


def _inlined(query: Select[Any]) -> Select[Any]:
    """``query`` with every value in the SQL text: a body search on PostgreSQL.

    Its plan depends on the values (how rare the needle is, how wide the window), and a statement
    run often on one connection is prepared (psycopg, from the 5th time) and after five more runs
    planned once for any values (PostgreSQL's generic plan). For a rare batch number in 30 days
    that plan walked the window probing every row: 10 ms became 190 ms from the 11th search on
    (bench hub, 1,000,000 rows). Without parameters the one plan is the plan for these values.
    """

    def literal(element: Any, **kw: Any) -> Any:
        if isinstance(element, BindParameter) and not element.literal_execute:
            return bindparam(
                None, element.value, type_=element.type, literal_execute=True, expanding=element.expanding
            )
        return None

    return cast(Select[Any], replacement_traverse(query, {}, literal))


def _fetch(tx: Tx, query: Select[Any]) -> list[DeliveryRecord]:
    return [_delivery(r) for r in tx.execute(query)]


# A body search on SQLite reads the index in rounds of candidates, each at least twice the last
# (more when few candidates were rows of the page), up to this many in all; past that the needle
# is common and the other filters rare (say every body holds it but one set in 2,500 is wanted),
# and walking the other filter's index with LIKE is cheaper.
SEARCH_ROUND = 200
SEARCH_CANDIDATES = 20_000
# With since/until the page is in time order, so every candidate must be in hand first: a rare
# needle's few, plus the rows the indexer has not reached; past either cap, the time-range walk.
SEARCH_TIMED_CANDIDATES = 2_000
SEARCH_TIMED_UNINDEXED = 5_000


def _search(tx: Tx, f: DeliveryFilter, *, limit: int, before_id: int | None) -> list[DeliveryRecord]:
    """``q`` on SQLite through the body index (store/search_index.py), same rows as the LIKE scan.

    Rows the indexer has not reached (ids above its mark: the last seconds of deliveries) are
    scanned; below the mark the index names candidates, and LIKE on each row (in ``_conditions``)
    decides. Newest first, so the unindexed rows come first.
    """
    assert f.q is not None
    upto = search_index.indexed_upto(tx)
    if _time_ranged(f):
        return _search_in_time(tx, f, upto=upto, limit=limit, before_id=before_id)
    conditions, keyed = _conditions(tx, f), _conditions(tx, f, by_key=True)
    newest = [*conditions, deliveries.c.id > upto]
    if before_id is not None:
        newest.append(deliveries.c.id < before_id)
    rows = _fetch(tx, select(*_COLUMNS).where(*newest).order_by(deliveries.c.id.desc()).limit(limit))
    below = upto + 1 if before_id is None else min(before_id, upto + 1)
    budget, read = SEARCH_ROUND, 0
    while len(rows) < limit:
        ids = search_index.candidates(tx, f.q, below=below, limit=budget)
        if ids:
            page = _among(ids, keyed).order_by(deliveries.c.id.desc())
            rows += _fetch(tx, page.limit(limit - len(rows)))
        if len(ids) < budget:
            break  # nothing older in the index
        below, read = ids[-1], read + len(ids)
        # Size the next round by the share of candidates that were rows of the page so far.
        share = max(len(rows), 1) / read
        budget = max(budget * 2, round((limit - len(rows)) / share * 1.5))
        if read + budget > SEARCH_CANDIDATES and len(rows) < limit:
            rows += _fetch(tx, list_query(tx, f, limit=limit - len(rows), before_id=below))
            break
    return rows


def _search_in_time(
    tx: Tx, f: DeliveryFilter, *, upto: int, limit: int, before_id: int | None
) -> list[DeliveryRecord]:
    """``q`` with since/until on SQLite: pages in time order, so all candidates or the scan.

    A rare needle has few candidates: those and the unindexed rows, filtered, sorted by time. A
    common one has too many, but then the created_at walk with LIKE fills a page within a few
    rows.
    """
    assert f.q is not None
    ids = search_index.candidates(tx, f.q, below=upto + 1, limit=SEARCH_TIMED_CANDIDATES)
    newest = select(deliveries.c.id).where(deliveries.c.id > upto).order_by(deliveries.c.id.desc())
    unindexed = list(tx.execute(newest.limit(SEARCH_TIMED_UNINDEXED)).scalars())
    if len(ids) >= SEARCH_TIMED_CANDIDATES or len(unindexed) >= SEARCH_TIMED_UNINDEXED:
        return _fetch(tx, list_query(tx, f, limit=limit, before_id=before_id))
    f, after = _after_in_time(tx, f, before_id, by_key=True)
    conditions = [*_conditions(tx, f, by_key=True), *after]
    by_time = (_Unindexed(deliveries).created_at.desc(), deliveries.c.id.desc())
    return _fetch(tx, _among(unindexed + ids, conditions).order_by(*by_time).limit(limit))


def _among(ids: list[int], conditions: list[ColumnElement[bool]]) -> Select[Any]:
    """The rows of these ids that meet ``conditions`` (made ``by_key``), looked up by key.

    The ids go over as one JSON parameter (thousands bind as one). The conditions must not be
    indexable: SQLite would rather walk another filter's index (or created_at's, for the time
    order) testing each row against the list than look up a few hundred keys and sort them.
    """
    listed: Select[Any] = select(literal_column("value")).select_from(func.json_each(json.dumps(ids)))
    return select(*_COLUMNS).where(deliveries.c.id.in_(listed), *conditions)


def get_delivery(tx: Tx, delivery_id: int) -> tuple[DeliveryRecord, str] | None:
    """The delivery and its frozen body."""
    row = tx.execute(select(*_COLUMNS, deliveries.c.body).where(deliveries.c.id == delivery_id)).one_or_none()
    return (_with_uids(tx, [_delivery(row)])[0], row.body) if row else None


def list_attempts(tx: Tx, delivery_id: int) -> list[AttemptRecord]:
    rows = tx.execute(
        select(attempts)
        .where(attempts.c.delivery_id == delivery_id)
        .order_by(attempts.c.number, attempts.c.id)
    )
    return [
        AttemptRecord(
            r.id,
            r.delivery_id,
            r.number,
            r.trigger,
            r.started_at,
            r.duration_ms,
            dict(r.request_headers or {}),
            r.status_code,
            dict(r.response_headers) if r.response_headers is not None else None,
            r.response_body,
            r.error_kind,
            r.error,
            r.hint,
            r.url,
        )
        for r in rows
    ]


def requeue(
    tx: Tx, delivery_id: int, *, from_statuses: Sequence[str], now: datetime, trigger: str
) -> DeliveryRecord | None:
    """Due now, same body and webhook id; None when the row is gone, moved on, or being sent."""
    row = tx.execute(
        update(deliveries)
        .where(
            deliveries.c.id == delivery_id,
            deliveries.c.status.in_(list(from_statuses)),
            lease_free(now),
            sendable(),
        )
        .values(
            status=_requeued_status(),
            next_attempt_at=now,
            next_trigger=trigger,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
            **_FRESH,
        )
        .returning(*_COLUMNS)
    ).one_or_none()
    return _with_uids(tx, [_delivery(row)])[0] if row else None


# A row sent again starts afresh: the last outcome's explanation ("Gave up after 1 attempts") and
# when it was delivered described the earlier attempts, which keep them.
_FRESH: dict[str, Any] = {"hint": None, "delivered_at": None}


def sendable() -> ColumnElement[bool]:
    """Rows a worker would send if queued: not a one-off send test, and their signal still active.

    Requeueing anything else would leave it pending forever (the worker skips removed signals).
    """
    live_signal = exists().where(signals.c.id == deliveries.c.signal_id, signals.c.active.is_(True))
    return and_(deliveries.c.is_test.is_(False), live_signal)


def is_sendable(tx: Tx, delivery_id: int) -> bool:
    return (
        tx.execute(select(deliveries.c.id).where(deliveries.c.id == delivery_id, sendable())).first()
        is not None
    )


def _requeued_status() -> Any:
    # A retrying row keeps its status (it only moves up); finished rows become pending again.
    return case((deliveries.c.status == "retrying", "retrying"), else_="pending")


def count_replayable(tx: Tx, f: DeliveryFilter) -> int:
    conditions = _conditions(tx, f)
    query = select(func.count()).select_from(deliveries).where(*conditions, sendable())
    return int(tx.execute(query).scalar_one())


def requeue_batch(tx: Tx, f: DeliveryFilter, *, now: datetime, trigger: str, batch: int) -> list[int]:
    """Requeue up to ``batch`` rows matching ``f`` (whose statuses must all be finished ones)."""
    assert f.statuses and not set(f.statuses) & {"pending", "retrying", "held"}
    ids_query = (
        select(deliveries.c.id)
        .where(*_conditions(tx, f), lease_free(now), sendable())
        .order_by(deliveries.c.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    ids = list(tx.execute(ids_query).scalars())
    if not ids:
        return []
    done = tx.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(ids), deliveries.c.status.in_(list(f.statuses)))
        .values(
            status="pending",
            next_attempt_at=now,
            next_trigger=trigger,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
            **_FRESH,
        )
        .returning(deliveries.c.id)
    )
    return list(done.scalars())


def cancel(tx: Tx, delivery_id: int, *, from_statuses: Sequence[str], now: datetime) -> DeliveryRecord | None:
    row = tx.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id, deliveries.c.status.in_(list(from_statuses)), lease_free(now))
        .values(status="cancelled", next_attempt_at=None, updated_at=now)
        .returning(*_COLUMNS)
    ).one_or_none()
    return _with_uids(tx, [_delivery(row)])[0] if row else None


# --- endpoints -----------------------------------------------------------------------------------


def _endpoint(row: Any) -> EndpointRecord:
    return EndpointRecord(
        row.origin,
        row.paused,
        row.throttled_until,
        row.circuit_state,
        row.circuit_opened_at,
        row.updated_at,
        row.rate_limit,
        row.max_in_flight,
    )


def list_endpoint_rows(tx: Tx) -> list[EndpointRecord]:
    return [_endpoint(r) for r in tx.execute(select(endpoints).order_by(endpoints.c.origin))]


def is_known_origin(tx: Tx, origin: str) -> bool:
    """Whether qhook has anything to do with ``origin``: its endpoint row, a delivery to it, or an
    active webhook signal whose URL is on it (an endpoint may be paused before its first send)."""
    row = tx.execute(select(endpoints.c.origin).where(endpoints.c.origin == origin)).first()
    sent = tx.execute(select(deliveries.c.id).where(deliveries.c.endpoint == origin).limit(1)).first()
    if row is not None or sent is not None:
        return True
    urls = tx.execute(
        select(signals.c.config).where(signals.c.type == "webhook", signals.c.active.is_(True))
    ).scalars()
    return any(origin_or_none((config or {}).get("url")) == origin for config in urls)


def endpoint_row(tx: Tx, origin: str) -> EndpointRecord | None:
    row = tx.execute(select(endpoints).where(endpoints.c.origin == origin)).one_or_none()
    return _endpoint(row) if row else None


def set_paused(tx: Tx, origin: str, *, paused: bool, now: datetime, detail: str) -> EndpointRecord:
    """Upsert the endpoint row's operator pause and log the change.

    Resume takes one step: it ends an operator's pause; on an endpoint no operator paused, it
    ends a receiver's Retry-After wait (the admin has seen the endpoint waiting and wants it to go
    now; the log names the wait dropped). A pause and resume for maintenance leaves the receiver's
    own request standing.

    Dropping the wait also brings forward the retries scheduled within it (the answers that asked
    for it): "Send now" left them waiting until the old time, an hour after a Retry-After: 3600.
    Retries due later than the wait keep their own backoff."""
    changes: dict[str, Any] = {"paused": paused, "updated_at": now}
    if not paused:
        current = tx.execute(
            select(endpoints.c.paused, endpoints.c.throttled_until).where(endpoints.c.origin == origin)
        ).one_or_none()
        if current is not None and not current.paused:
            changes["throttled_until"] = None
            if current.throttled_until is not None and current.throttled_until > now:
                until = current.throttled_until
                moved = tx.execute(
                    update(deliveries)
                    .where(
                        deliveries.c.endpoint == origin,
                        deliveries.c.status == "retrying",
                        deliveries.c.next_attempt_at > now,
                        deliveries.c.next_attempt_at <= until,
                    )
                    .values(next_attempt_at=now, updated_at=now)
                ).rowcount
                detail = (
                    f"{detail}; the Retry-After wait until {until:%Y-%m-%d %H:%M:%S} UTC is dropped"
                    f" and {moved} retr{'y' if moved == 1 else 'ies'} waiting for it go now"
                )
    dialect_insert = pg_insert if tx.dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(endpoints).values(origin=origin, **changes)
    row = tx.execute(
        statement.on_conflict_do_update(index_elements=[endpoints.c.origin], set_=changes).returning(
            endpoints
        )
    ).one()
    tx.execute(
        insert(endpoint_log).values(
            origin=origin, at=now, change="paused" if paused else "resumed", detail=detail
        )
    )
    return _endpoint(row)


def serves_other_sets(tx: Tx, origin: str, set_ids: frozenset[int]) -> bool:
    """Whether a delivery of a set outside ``set_ids`` (or of none) goes to ``origin``."""
    other = or_(deliveries.c.set_id.is_(None), deliveries.c.set_id.not_in(sorted(set_ids)))
    found = tx.execute(select(deliveries.c.id).where(deliveries.c.endpoint == origin, other).limit(1))
    return found.first() is not None


def queue_depths(tx: Tx, set_ids: frozenset[int] | None = None) -> dict[str, int]:
    """Unfinished deliveries per endpoint (walks the (status, ...) index of the due rows)."""
    unfinished: ColumnElement[bool] = deliveries.c.status.in_(["pending", "retrying", "held"])
    if set_ids is not None:
        unfinished = and_(unfinished, deliveries.c.set_id.in_(sorted(set_ids)))
    rows = tx.execute(
        select(deliveries.c.endpoint, func.count()).where(unfinished).group_by(deliveries.c.endpoint)
    )
    return {origin: int(count) for origin, count in rows}


# --- retention -----------------------------------------------------------------------------------


def _purgeable(status: str, cutoff: datetime) -> ColumnElement[bool]:
    # created_at bounds the index walk; updated_at keeps rows that were redelivered lately.
    return and_(
        deliveries.c.created_at < cutoff, deliveries.c.status == status, deliveries.c.updated_at < cutoff
    )


def count_purgeable(tx: Tx, status: str, cutoff: datetime) -> tuple[int, int]:
    """(deliveries, attempts) a purge of ``status`` rows older than ``cutoff`` would remove."""
    condition = _purgeable(status, cutoff)
    rows = int(tx.execute(select(func.count()).select_from(deliveries).where(condition)).scalar_one())
    tries = tx.execute(
        select(func.count())
        .select_from(attempts)
        .where(attempts.c.delivery_id.in_(select(deliveries.c.id).where(condition)))
    ).scalar_one()
    return rows, int(tries)


def purge_batch(tx: Tx, status: str, cutoff: datetime, *, batch: int) -> tuple[int, int]:
    """Delete up to ``batch`` old ``status`` deliveries and their attempts; (deliveries, attempts)."""
    ids = list(
        tx.execute(
            select(deliveries.c.id)
            .where(_purgeable(status, cutoff))
            .order_by(deliveries.c.created_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if not ids:
        return 0, 0
    removed_attempts = tx.execute(delete(attempts).where(attempts.c.delivery_id.in_(ids))).rowcount
    removed = tx.execute(delete(deliveries).where(deliveries.c.id.in_(ids))).rowcount
    return int(removed), int(removed_attempts)


def delivery_id_by_webhook_id(tx: Tx, webhook_id: str) -> int | None:
    """The delivery a receiver knows by its ``webhook-id`` header (a unique index)."""
    return tx.execute(select(deliveries.c.id).where(deliveries.c.webhook_id == webhook_id)).scalar()
