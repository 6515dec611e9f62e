"""Endpoint state shared by every worker: pause, Retry-After throttle, circuit; and its log."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    Boolean,
    ColumnElement,
    and_,
    bindparam,
    func,
    insert,
    literal_column,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from qhook.store.db import Tx
from qhook.store.tables import attempts, deliveries, endpoint_log, endpoints


@dataclass(frozen=True, slots=True)
class EndpointState:
    origin: str
    paused: bool
    throttled_until: datetime | None
    circuit_state: str
    circuit_opened_at: datetime | None
    circuit_probe_at: datetime | None
    rate_limit: str | None
    max_in_flight: int | None
    updated_at: datetime

    def blocked(self, now: datetime) -> bool:
        """Whether nothing may be sent to it now (a probe is claimed separately)."""
        throttled = self.throttled_until is not None and self.throttled_until > now
        return self.paused or throttled or self.circuit_state != "closed"


@dataclass(frozen=True, slots=True)
class EndpointLogEntry:
    id: int
    origin: str
    at: datetime
    change: str
    detail: str | None


def _state(row: object) -> EndpointState:
    return EndpointState(*(getattr(row, c.name) for c in endpoints.columns))


def ensure(tx: Tx, origin: str, now: datetime) -> None:
    """Create the endpoint's row if missing (concurrent workers may race; both succeed)."""
    dialect_insert = pg_insert if tx.dialect.name == "postgresql" else sqlite_insert
    tx.execute(
        dialect_insert(endpoints)
        .values(origin=origin, paused=False, circuit_state="closed", updated_at=now)
        .on_conflict_do_nothing(index_elements=[endpoints.c.origin])
    )


def get(tx: Tx, origin: str) -> EndpointState | None:
    row = tx.execute(select(endpoints).where(endpoints.c.origin == origin)).one_or_none()
    return _state(row) if row else None


_STATES_OF = select(endpoints).where(endpoints.c.origin.in_(bindparam("origins", expanding=True)))


def states(tx: Tx, origins: Iterable[str] | None = None) -> dict[str, EndpointState]:
    if origins is None:
        return {r.origin: _state(r) for r in tx.execute(select(endpoints))}
    rows = tx.execute(_STATES_OF, {"origins": sorted(set(origins))})
    return {r.origin: _state(r) for r in rows}


def blocked_origins(tx: Tx, now: datetime) -> dict[str, EndpointState]:
    """Endpoints that take nothing now: paused, throttled, or with a circuit not closed."""
    rows = tx.execute(
        select(endpoints).where(
            or_(
                endpoints.c.paused.is_(True),
                endpoints.c.throttled_until > now,
                endpoints.c.circuit_state != "closed",
            )
        )
    )
    return {r.origin: _state(r) for r in rows}


def log(tx: Tx, origin: str, change: str, detail: str | None, now: datetime) -> None:
    tx.execute(insert(endpoint_log).values(origin=origin, at=now, change=change, detail=detail))


def opened_at(tx: Tx, origins: Sequence[str]) -> dict[str, datetime]:
    """When each origin's circuit last opened, from its log: ``circuit_opened_at`` restarts with
    every failed probe (it times the next cool-off), so an outage of hours read "open since" the
    last minute."""
    if not origins:
        return {}
    query = (
        select(endpoint_log.c.origin, func.max(endpoint_log.c.at))
        .where(endpoint_log.c.change == "circuit_open", endpoint_log.c.origin.in_(list(origins)))
        .group_by(endpoint_log.c.origin)
    )
    return {origin: at for origin, at in tx.execute(query)}


def log_entries(
    tx: Tx, origin: str | None = None, limit: int = 100, before_id: int | None = None
) -> list[EndpointLogEntry]:
    """Newest first; ``before_id`` continues a page."""
    query = select(endpoint_log).order_by(endpoint_log.c.id.desc()).limit(limit)
    if origin is not None:
        query = query.where(endpoint_log.c.origin == origin)
    if before_id is not None:
        query = query.where(endpoint_log.c.id < before_id)
    return [EndpointLogEntry(r.id, r.origin, r.at, r.change, r.detail) for r in tx.execute(query)]


THROTTLE_LOGGED_STEP = timedelta(seconds=1)


def throttle(tx: Tx, origin: str, until: datetime, now: datetime, detail: str | None = None) -> bool:
    """Pause the whole endpoint until ``until`` (Retry-After); only ever extends. True when changed.

    The log gets a line for a new wait, or for one extended by a second or more: every send in
    flight when a receiver starts answering 503 extends the wait by the microseconds between their
    answers, and each wrote the same line, pushing the endpoint's history out of the page."""
    ensure(tx, origin, now)
    before = tx.execute(
        select(endpoints.c.throttled_until).where(endpoints.c.origin == origin)
    ).scalar_one_or_none()
    done = tx.execute(
        update(endpoints)
        .where(
            endpoints.c.origin == origin,
            or_(endpoints.c.throttled_until.is_(None), endpoints.c.throttled_until < until),
        )
        .values(throttled_until=until, updated_at=now)
    )
    logged = before is None or before <= now or until - before >= THROTTLE_LOGGED_STEP
    if done.rowcount and logged:
        log(tx, origin, "throttled", detail or f"until {until.isoformat()}", now)
    return bool(done.rowcount)


def open_circuit(tx: Tx, origin: str, now: datetime, detail: str) -> bool:
    """closed -> open; True only for the worker that made the change (it reports and logs it)."""
    ensure(tx, origin, now)
    done = tx.execute(
        update(endpoints)
        .where(endpoints.c.origin == origin, endpoints.c.circuit_state == "closed")
        .values(circuit_state="open", circuit_opened_at=now, circuit_probe_at=None, updated_at=now)
    )
    if done.rowcount:
        log(tx, origin, "circuit_open", detail, now)
    return bool(done.rowcount)


def _may_probe(now: datetime, cool_off: timedelta, probe_timeout: timedelta) -> ColumnElement[bool]:
    """Open and cooled off or asked to probe now (``request_probe``), or half_open with no live
    probe (none yet, or its probe timed out)."""
    waited = or_(endpoints.c.throttled_until.is_(None), endpoints.c.throttled_until <= now)  # Retry-After
    return and_(
        waited,
        or_(
            and_(
                endpoints.c.circuit_state == "open",
                or_(
                    endpoints.c.circuit_opened_at <= now - cool_off,
                    endpoints.c.circuit_probe_at.is_not(None),  # an operator asked for a probe
                ),
            ),
            and_(
                endpoints.c.circuit_state == "half_open",
                or_(
                    endpoints.c.circuit_probe_at.is_(None),
                    endpoints.c.circuit_probe_at <= now - probe_timeout,
                ),
            ),
        ),
    )


def request_probe(tx: Tx, origin: str, now: datetime, detail: str) -> bool:
    """An operator fixed the receiver: the next maintenance tick probes an open circuit without
    waiting out the cool-off. ``circuit_probe_at`` is otherwise empty while open, so it carries
    the request. True when the circuit was open."""
    done = tx.execute(
        update(endpoints)
        .where(endpoints.c.origin == origin, endpoints.c.circuit_state == "open")
        .values(circuit_probe_at=now, updated_at=now)
    )
    if done.rowcount:
        log(tx, origin, "probe_requested", detail, now)
    return bool(done.rowcount)


def start_probe(tx: Tx, origin: str, now: datetime, cool_off: timedelta, probe_timeout: timedelta) -> bool:
    """open (cooled off) or a lost half_open probe -> half_open; True for the one worker that probes."""
    done = tx.execute(
        update(endpoints)
        .where(endpoints.c.origin == origin, _may_probe(now, cool_off, probe_timeout))
        .values(circuit_state="half_open", circuit_probe_at=now, updated_at=now)
    )
    return bool(done.rowcount)


def abandon_probe(tx: Tx, origin: str, now: datetime) -> None:
    """Nothing to probe with: back to open, cool-off unchanged, so the next tick tries again."""
    tx.execute(
        update(endpoints)
        .where(endpoints.c.origin == origin, endpoints.c.circuit_state == "half_open")
        .values(circuit_state="open", circuit_probe_at=None, updated_at=now)
    )


def probe_failed(tx: Tx, origin: str, now: datetime, detail: str) -> None:
    """half_open -> open with a fresh cool-off (``circuit_opened_at`` times it; ``opened_at``
    says when the outage began)."""
    done = tx.execute(
        update(endpoints)
        .where(endpoints.c.origin == origin, endpoints.c.circuit_state != "closed")
        .values(circuit_state="open", circuit_opened_at=now, circuit_probe_at=None, updated_at=now)
    )
    if done.rowcount:
        log(tx, origin, "probe_failed", detail, now)


def close_circuit(tx: Tx, origin: str, now: datetime, detail: str | None = None) -> bool:
    """open/half_open -> closed; True when it changed."""
    done = tx.execute(
        update(endpoints)
        .where(endpoints.c.origin == origin, endpoints.c.circuit_state != "closed")
        .values(circuit_state="closed", circuit_opened_at=None, circuit_probe_at=None, updated_at=now)
    )
    if done.rowcount:
        log(tx, origin, "circuit_closed", detail, now)
    return bool(done.rowcount)


def probe_candidates(tx: Tx, now: datetime, cool_off: timedelta, probe_timeout: timedelta) -> list[str]:
    """Origins whose circuit may send one probe now."""
    rows = tx.execute(select(endpoints.c.origin).where(_may_probe(now, cool_off, probe_timeout)))
    return [r.origin for r in rows]


def waiting_counts(tx: Tx, now: datetime) -> dict[str, int]:
    """Endpoints that take nothing for a while by someone's wish: ``paused`` by an operator,
    ``throttled`` by a receiver's Retry-After."""
    paused, throttled = tx.execute(
        select(
            func.count().filter(endpoints.c.paused.is_(True)),
            func.count().filter(endpoints.c.throttled_until > now),
        ).select_from(endpoints)
    ).one()
    return {"paused": int(paused or 0), "throttled": int(throttled or 0)}


def open_circuit_count(tx: Tx) -> int:
    rows = tx.execute(select(endpoints.c.origin).where(endpoints.c.circuit_state != "closed"))
    return len(rows.all())


def set_limits(
    tx: Tx, origin: str, *, rate_limit: str | None, max_in_flight: int | None, now: datetime
) -> None:
    """Per-host limits; they win over the signals' own ``rate_limit`` / ``max_in_flight``."""
    ensure(tx, origin, now)
    tx.execute(
        update(endpoints)
        .where(endpoints.c.origin == origin)
        .values(rate_limit=rate_limit, max_in_flight=max_in_flight, updated_at=now)
    )
    log(
        tx,
        origin,
        "limits",
        f"rate_limit={rate_limit or 'none'} max_in_flight={max_in_flight or 'default'}",
        now,
    )


def circuit_counts(tx: Tx, origin: str, since: datetime, failure_kinds: Iterable[str]) -> tuple[int, int]:
    """(attempts, failures) of the endpoint since ``since`` by every worker, as the circuit counts them.

    Successes and endpoint-wide failures (network errors, 5xx) count; a 4xx is about one message.
    Only attempts after the circuit last closed count, so a closed circuit starts afresh.
    """
    closed_at = tx.execute(
        select(func.max(endpoint_log.c.at)).where(
            endpoint_log.c.origin == origin, endpoint_log.c.change == "circuit_closed"
        )
    ).scalar_one_or_none()
    if isinstance(closed_at, datetime) and closed_at > since:
        since = closed_at
    code = attempts.c.status_code
    kind = attempts.c.error_kind
    succeeded = and_(kind.is_(None), code >= 200, code < 300)
    # A 503 with Retry-After is a receiver alive and asking for time (the pause handles it): an
    # answer header of that name, whatever its spelling (not a value that mentions it).
    headers = "attempts.response_headers"
    keys = (
        f"json_each({headers})"
        if tx.dialect.name == "sqlite"
        else f"jsonb_each_text(CASE WHEN jsonb_typeof({headers}) = 'object' THEN {headers} ELSE '{{}}' END)"
    )
    asked_to_wait = literal_column(
        f"EXISTS (SELECT 1 FROM {keys} AS h WHERE lower(h.key) = 'retry-after')", Boolean
    )
    failed = or_(
        kind.in_(sorted(failure_kinds)),
        and_(code >= 500, or_(kind.is_(None), kind == "http_status"), not_(asked_to_wait)),
    )
    row = tx.execute(
        select(
            func.count().filter(or_(succeeded, failed)),
            func.count().filter(failed),
        )
        .select_from(attempts.join(deliveries, deliveries.c.id == attempts.c.delivery_id))
        .where(deliveries.c.endpoint == origin, attempts.c.started_at >= since)
    ).one()
    return int(row[0] or 0), int(row[1] or 0)
