"""PostgreSQL pool: a connection that sat idle is pinged before use and replaced if it died;
a connection in steady use is not pinged at all (no extra round trip per transaction). A burst
beyond the pool waits for a connection instead of opening and closing extra ones; a wait that
runs out is a 503."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError
from sqlalchemy import text

from qhook.context import open_context
from qhook.errors import StoreError
from qhook.settings import Settings
from qhook.store import db as db_module
from qhook.store.db import Database
from tests.conftest import fresh_postgres_url
from tests.support import pg


@pytest.fixture
def pg_db(pg_server: pg.PgServer) -> Iterator[Database]:
    database = Database(fresh_postgres_url(pg_server), pool_size=1)
    yield database
    database.dispose()


def _backend_pid(database: Database) -> int:
    with database.reading() as tx:
        return int(tx.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _pings(database: Database) -> list[str]:
    """Record every ping the pool makes (do_ping runs on the raw driver connection)."""
    seen: list[str] = []
    original = database.engine.dialect.do_ping

    def ping(dbapi_conn: Any) -> bool:
        seen.append("ping")
        return bool(original(dbapi_conn))

    database.engine.dialect.do_ping = ping  # type: ignore[method-assign]
    return seen


def test_a_dead_idle_connection_is_replaced_before_use(
    pg_db: Database, pg_server: pg.PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "IDLE_PING_S", 0.05)
    pid = _backend_pid(pg_db)
    with psycopg.connect(pg_server.url("postgres").replace("+psycopg", ""), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    time.sleep(0.2)
    assert _backend_pid(pg_db) != pid  # no error: the pool noticed and opened a new connection


def test_a_connection_in_steady_use_is_not_pinged(pg_db: Database) -> None:
    _backend_pid(pg_db)
    pings = _pings(pg_db)
    for _ in range(20):
        _backend_pid(pg_db)
    assert pings == []
    time.sleep(db_module.IDLE_PING_S + 0.2)
    _backend_pid(pg_db)
    assert pings == ["ping"]


def test_a_burst_beyond_the_pool_reuses_its_connections(pg_server: pg.PgServer) -> None:
    database = Database(fresh_postgres_url(pg_server), pool_size=3)
    gate = threading.Barrier(8)

    def one(_: int) -> int:
        with database.reading() as tx:
            return int(tx.execute(text("SELECT pg_backend_pid() FROM pg_sleep(0.02)")).scalar_one())

    def burst(_: int) -> set[int]:
        gate.wait()
        return {one(i) for i in range(5)}

    try:
        with ThreadPoolExecutor(8) as pool:
            backends = set().union(*pool.map(burst, range(8)))
        # Eight threads at once on a pool of three: they took turns on the same three backends
        # (an overflow connection was opened for the burst and closed again when handed back).
        assert len(backends) <= 3
        assert database.engine.pool.checkedin() == len(backends)
    finally:
        database.dispose()


def test_no_free_connection_in_time_is_a_store_error(
    pg_server: pg.PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "POOL_WAIT_S", 0.2)
    database = Database(fresh_postgres_url(pg_server), pool_size=1)
    try:
        with database.reading(), pytest.raises(StoreError, match=r"no free connection within 0\.2 s"):
            with database.reading():
                pass
        with database.reading() as tx:  # the held connection went back: usable again
            assert tx.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        database.dispose()


def test_the_pool_size_comes_from_qhook_db_pool_size(pg_server: pg.PgServer, tmp_path: Any) -> None:
    settings = Settings(database_url=fresh_postgres_url(pg_server), data_dir=tmp_path, db_pool_size=3)
    ctx = open_context(settings)
    try:
        assert ctx.db.engine.pool.size() == 3  # type: ignore[attr-defined]
    finally:
        ctx.db.dispose()
    with pytest.raises(ValidationError, match="db_pool_size"):
        Settings(db_pool_size=0)
