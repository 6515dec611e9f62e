"""An API key's last-used time: kept to the minute, counted requests stay exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from qhook.domain.rates import parse_rate
from qhook.services import users
from qhook.store.db import Database

RATE = parse_rate("30/minute", "QHOOK_API_RATE_LIMIT")


def _last_used(db: Database, key_id: int) -> datetime | None:
    return next(k.last_used_at for k in users.list_api_keys(db) if k.id == key_id)


def test_last_used_is_written_once_a_minute_while_every_request_counts(db: Database) -> None:
    users.create_user(db, "erp", "editor")
    key, plain = users.create_api_key(db, "erp")
    start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

    _, first = users.authenticate_key(db, plain, RATE, start)
    assert _last_used(db, key.id) == start

    _, second = users.authenticate_key(db, plain, RATE, start + timedelta(seconds=59))
    assert _last_used(db, key.id) == start  # within the minute: no row write
    assert (first.remaining, second.remaining) == (29, 28)  # but the request counted

    later = start + timedelta(minutes=1)
    users.authenticate_key(db, plain, RATE, later)
    assert _last_used(db, key.id) == later
