"""Numbers for the Hub: attempt latency and success per endpoint or per hour, deliveries per hour.

Percentiles mean the same on both databases: percentile_cont on PostgreSQL, and the same linear
interpolation in Python on SQLite (over the attempts of a bounded window, fetched by started_at).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select

from qhook.domain.percentiles import percentiles
from qhook.store.db import Tx
from qhook.store.tables import attempts, deliveries

FRACTIONS = (0.5, 0.95, 0.99)


@dataclass(frozen=True, slots=True)
class Latency:
    attempts: int
    succeeded: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


def _ok() -> ColumnElement[bool]:
    return and_(attempts.c.status_code >= 200, attempts.c.status_code < 300, attempts.c.error_kind.is_(None))


def _window(since: datetime, until: datetime, set_ids: frozenset[int] | None = None) -> ColumnElement[bool]:
    """Attempts in the window; ``set_ids`` keeps those of deliveries of these sets (a user's restriction)."""
    window = and_(attempts.c.started_at >= since, attempts.c.started_at < until)
    if set_ids is not None:
        window = and_(window, deliveries.c.set_id.in_(sorted(set_ids)))
    return window


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _aware(value: Any) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(moment, datetime)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _pg_latency(
    tx: Tx, group: ColumnElement[Any], since: datetime, until: datetime, set_ids: frozenset[int] | None
) -> dict[Any, Latency]:
    duration = attempts.c.duration_ms
    query = (
        select(
            group.label("key"),
            func.count().label("n"),
            func.count().filter(_ok()).label("ok"),
            *(func.percentile_cont(f).within_group(duration).label(f"p{i}") for i, f in enumerate(FRACTIONS)),
        )
        .select_from(attempts.join(deliveries, deliveries.c.id == attempts.c.delivery_id))
        .where(_window(since, until, set_ids))
        .group_by(group)
    )
    found: dict[Any, Latency] = {}
    for row in tx.execute(query):
        cuts = [None if v is None else float(v) for v in (row.p0, row.p1, row.p2)]
        found[row.key] = Latency(int(row.n), int(row.ok), *cuts)
    return found


def _python_latency(
    tx: Tx,
    group: ColumnElement[Any],
    since: datetime,
    until: datetime,
    key_of: Any,
    set_ids: frozenset[int] | None,
) -> dict[Any, Latency]:
    query = (
        select(group.label("key"), attempts.c.duration_ms, _ok().label("ok"))
        .select_from(attempts.join(deliveries, deliveries.c.id == attempts.c.delivery_id))
        .where(_window(since, until, set_ids))
    )
    durations: dict[Any, list[float | None]] = defaultdict(list)
    succeeded: dict[Any, int] = defaultdict(int)
    for row in tx.execute(query):
        key = key_of(row.key)
        durations[key].append(row.duration_ms)
        succeeded[key] += 1 if row.ok else 0
    return {
        key: Latency(len(values), succeeded[key], *percentiles(values, FRACTIONS))
        for key, values in durations.items()
    }


def latency_by_endpoint(
    tx: Tx, since: datetime, until: datetime, set_ids: frozenset[int] | None = None
) -> dict[str, Latency]:
    """Attempts started in [since, until) per endpoint origin."""
    if tx.dialect.name == "postgresql":
        return _pg_latency(tx, deliveries.c.endpoint, since, until, set_ids)
    return _python_latency(tx, deliveries.c.endpoint, since, until, lambda key: key, set_ids)


def latency_by_hour(
    tx: Tx, since: datetime, until: datetime, set_ids: frozenset[int] | None = None
) -> dict[datetime, Latency]:
    """Attempts started in [since, until) per UTC hour."""
    if tx.dialect.name == "postgresql":
        hour = func.date_trunc("hour", func.timezone("UTC", attempts.c.started_at))
        return {_aware(k): v for k, v in _pg_latency(tx, hour, since, until, set_ids).items()}
    return _python_latency(
        tx, attempts.c.started_at, since, until, lambda started: _hour(_aware(started)), set_ids
    )


def deliveries_by_hour(
    tx: Tx, since: datetime, until: datetime, set_ids: frozenset[int] | None = None
) -> dict[tuple[datetime, str], int]:
    """Deliveries created in [since, until) per (UTC hour, current status)."""
    if tx.dialect.name == "postgresql":
        hour: ColumnElement[Any] = func.date_trunc("hour", func.timezone("UTC", deliveries.c.created_at))
    else:
        hour = func.strftime("%Y-%m-%d %H:00:00", deliveries.c.created_at)
    window = and_(deliveries.c.created_at >= since, deliveries.c.created_at < until)
    if set_ids is not None:
        window = and_(window, deliveries.c.set_id.in_(sorted(set_ids)))
    rows = tx.execute(
        select(hour.label("hour"), deliveries.c.status, func.count().label("n"))
        .where(window)
        .group_by(hour, deliveries.c.status)
    )
    return {(_aware(r.hour), r.status): int(r.n) for r in rows}


def last_ok_by_endpoint(
    tx: Tx, since: datetime, until: datetime, set_ids: frozenset[int] | None = None
) -> dict[str, bool]:
    """Whether the newest attempt in [since, until) of each endpoint succeeded."""
    newest = tx.execute(
        select(deliveries.c.endpoint, func.max(attempts.c.id))
        .select_from(attempts.join(deliveries, deliveries.c.id == attempts.c.delivery_id))
        .where(_window(since, until, set_ids))
        .group_by(deliveries.c.endpoint)
    ).all()
    if not newest:
        return {}
    ok = set(
        tx.execute(select(attempts.c.id).where(attempts.c.id.in_([i for _, i in newest]), _ok())).scalars()
    )
    return {endpoint: attempt_id in ok for endpoint, attempt_id in newest}
