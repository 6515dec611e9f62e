"""PostgreSQL reads and stand-alone statements run without BEGIN and COMMIT round trips; SQLite
keeps its transactions (one snapshot for a read, the write turn for a write)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from qhook.domain.rates import parse_rate
from qhook.services import users
from qhook.store.db import Database, Tx


def _in_transaction(tx: Tx) -> bool:
    dbapi: Any = tx.connection.dbapi_connection
    if tx.dialect.name == "postgresql":
        from psycopg.pq import TransactionStatus

        return bool(dbapi.info.transaction_status != TransactionStatus.IDLE)
    return bool(dbapi.in_transaction)


def test_reads_run_without_a_transaction_on_postgresql(db: Database) -> None:
    with db.reading() as tx:
        tx.execute(text("SELECT 1"))
        assert _in_transaction(tx) is db.is_sqlite
    with db.transaction() as tx:
        tx.execute(text("SELECT 1"))
        assert _in_transaction(tx)  # writes keep their transaction on both


def test_stand_alone_statements_commit_each_on_postgresql(db: Database) -> None:
    with db.autocommit() as tx:
        tx.execute(text("CREATE TABLE t (x INTEGER)"))
        tx.execute(text("INSERT INTO t VALUES (1)"))
        assert _in_transaction(tx) is db.is_sqlite
    with db.reading() as tx:
        assert tx.execute(text("SELECT x FROM t")).scalar_one() == 1


def test_a_pooled_connection_is_transactional_again_after_autocommit(db: Database) -> None:
    for _ in range(3):  # the pool hands the same connection back
        with db.autocommit() as tx:
            tx.execute(text("SELECT 1"))
        with db.transaction() as tx:
            tx.execute(text("SELECT 1"))
            assert _in_transaction(tx)


def test_key_authentication_counts_each_request(db: Database) -> None:
    users.create_user(db, "ops", "admin")
    _, key = users.create_api_key(db, "ops")
    rate = parse_rate("3/minute", "rate")
    states = [users.authenticate_key(db, key, rate, None, "127.0.0.1")[1] for _ in range(3)]
    assert [s.remaining for s in states] == [2, 1, 0]
