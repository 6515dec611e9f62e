"""Health checks, migrations, the error shape, keys, roles and the shared rate limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import inspect

from qhook.context import AppContext
from qhook.services import users
from qhook.store import migrate
from qhook.store.db import Database
from qhook.store.tables import metadata
from tests.conftest import auth


async def test_health_and_ready(client: httpx.AsyncClient, ctx: AppContext) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready"}
    if ctx.db.file is None:
        return
    # The SQLite file moved away under a running qhook (its open connections write on into it):
    # it said ready, and accepted results nobody would find.
    moved = ctx.db.file.with_name("moved.db")
    ctx.db.file.rename(moved)
    try:
        gone = await client.get("/readyz")
        assert gone.status_code == 503
        assert gone.json()["error"] == (
            f"Database unavailable: the database file {ctx.db.file} is gone (moved or deleted); restart qhook"
        )
    finally:
        moved.rename(ctx.db.file)
    assert (await client.get("/readyz")).status_code == 200


def test_migrations_match_models(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with db.engine.connect() as conn:
        opts = {"compare_type": True, "include_name": migrate.include_name}
        diff = compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)
    assert diff == [], diff
    assert migrate.is_current(db)
    assert set(inspect(db.engine).get_table_names()) >= set(metadata.tables)


async def test_missing_and_bad_key_are_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/me")
    assert response.status_code == 401
    assert "Bearer" in response.json()["error"]
    response = await client.get("/api/v1/me", headers=auth("qhk_nope"))
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid or revoked API key"}


async def test_revoked_key_stops_working(client: httpx.AsyncClient, ctx: AppContext, admin_key: str) -> None:
    assert (await client.get("/api/v1/me", headers=auth(admin_key))).status_code == 200
    key = next(k for k in users.list_api_keys(ctx.db, "alice"))
    users.revoke_api_key(ctx.db, key.id)
    assert (await client.get("/api/v1/me", headers=auth(admin_key))).status_code == 401
    listed = users.list_api_keys(ctx.db, "alice")[0]
    assert listed.revoked_at is not None and listed.last_used_at is not None


async def test_unknown_route_is_json_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"].startswith("Not found")


async def test_body_over_limit_is_413(api: httpx.AsyncClient, ctx: AppContext) -> None:
    limit = ctx.settings.max_body_bytes
    response = await api.post(
        "/api/v1/sets", content=b"x" * (limit + 1), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "QHOOK_MAX_BODY_BYTES" in response.json()["error"]


async def test_roles_are_checked(client: httpx.AsyncClient, viewer_key: str, admin_key: str) -> None:
    response = await client.get("/api/v1/users", headers=auth(viewer_key))
    assert response.status_code == 403
    assert "admin role" in response.json()["error"]
    response = await client.get("/api/v1/users", headers=auth(admin_key))
    assert response.status_code == 200
    assert {u["name"] for u in response.json()} == {"alice", "victor"}


async def test_key_created_by_api_is_shown_once_and_works(api: httpx.AsyncClient, make_key) -> None:  # type: ignore[no-untyped-def]
    make_key("editor", "ed")
    created = await api.post("/api/v1/api-keys", json={"user": "ed", "label": "erp"})
    assert created.status_code == 201
    plain = created.json()["key"]
    listed = (await api.get("/api/v1/api-keys", params={"user": "ed"})).json()
    assert all("key" not in k for k in listed)
    assert plain not in str(listed)
    me = await api.get("/api/v1/me", headers=auth(plain))
    assert me.json() == {"name": "ed", "role": "editor", "set_ids": None}


async def test_rate_limit_31st_request_is_429(client: httpx.AsyncClient, ctx: AppContext) -> None:
    from qhook.settings import Settings

    ctx.settings = Settings(**{**ctx.settings.model_dump(), "api_rate_limit": "30/minute"})
    key = users.create_api_key(ctx.db, users.create_user(ctx.db, "rita", "viewer").name)[1]
    other = users.create_api_key(ctx.db, "rita", "second key")[1]
    for number in range(1, 31):
        response = await client.get("/api/v1/me", headers=auth(key))
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "30"
        assert response.headers["X-RateLimit-Remaining"] == str(30 - number)
        wait = int(response.headers["X-RateLimit-Retry-After"])  # before the next call
        assert wait == 0 if number < 30 else 1 <= wait <= 60
    response = await client.get("/api/v1/me", headers=auth(key))
    assert response.status_code == 429
    assert 1 <= int(response.headers["X-RateLimit-Retry-After"]) <= 60
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert "30/minute" in response.json()["error"]
    # the limit is per key
    assert (await client.get("/api/v1/me", headers=auth(other))).status_code == 200


def test_sqlite_times_written_without_microseconds_get_them(tmp_path: Path) -> None:
    """Migration 0007: the bulk inserts wrote whole seconds as "... 00:00:00" where statements
    write "... 00:00:00.000000", and the two sorted apart as text."""
    from sqlalchemy import text

    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        migrate.upgrade(db, "0006")
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO sets (id, name, kind, created_at, updated_at) VALUES "
                    "(1, 's', 'analysis_set', '2025-01-01 00:00:00.000000', '2025-01-01 00:00:00.000000')"
                )
            )
            conn.execute(
                text(
                    'INSERT INTO results (id, set_id, date, "values", version, created_at, updated_at,'
                    " created_by, updated_by) VALUES (1, 1, '2025-01-01 00:00:00', '{}', 1,"
                    " '2025-01-01 00:00:00.250000', '2025-01-01 00:00:01', 'a', 'a')"
                )
            )
        migrate.upgrade(db)
        with db.engine.connect() as conn:
            row = conn.execute(text("SELECT date, created_at, updated_at FROM results")).one()
        assert tuple(row) == (
            "2025-01-01 00:00:00.000000",
            "2025-01-01 00:00:00.250000",
            "2025-01-01 00:00:01.000000",
        )
    finally:
        db.dispose()


def test_sqlite_ids_are_never_given_again_after_migration_0008(tmp_path: Path) -> None:
    """Migration 0008 rebuilds the tables with AUTOINCREMENT on a database with rows: every row,
    id, index and reference stays (nothing cascades away), and an id deleted before the migration
    that the history still names (events, deliveries) is not given again either."""
    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    t = "2025-01-01 00:00:00.000000"
    try:
        migrate.upgrade(db, "0007")
        with db.engine.begin() as conn:
            _add(conn, "users", id=1, name="ada", role="admin", active=1, created_at=t)
            # Limited to set 1 and to set 9, deleted before the migration (and mailed about: 8).
            _add(conn, "users", id=2, name="lim", role="viewer", active=1, created_at=t, set_ids="[1, 9]")
            _add(
                conn,
                "email_outbox",
                id=1,
                set_id=8,
                recipients="[]",
                subject="s",
                body="b",
                status="sent",
                created_at=t,
            )
            _add(conn, "api_keys", id=1, user_id=1, label="", prefix="qhk_x", key_hash="h", created_at=t)
            _add(conn, "sets", id=1, name="s", kind="analysis_set", created_at=t, updated_at=t)
            _add(conn, "fields", id=1, set_id=1, name="ph_", label="pH", type="number", position=0)
            for result_id in (1, 2):
                _add(conn, "results", id=result_id, set_id=1, date=t, values="{}", version=1, created_at=t,
                     updated_at=t, created_by="a", updated_by="a")  # fmt: skip
            # Result 3 was deleted; its event remains.
            _add(conn, "events", id=1, uid="evt_1", set_id=1, result_id=3, action="deleted", actor="a",
                 occurred_at=t, changes="{}", evaluations="[]")  # fmt: skip
            _add(
                conn,
                "workflows",
                id=1,
                set_id=1,
                name="w",
                active=1,
                triggers="{}",
                created_at=t,
                updated_at=t,
            )
            _add(conn, "signals", id=1, workflow_id=1, position=0, type="webhook", config="{}", active=1)
            before = {name: _index_names(conn, name) for name in ("results", "fields", "signals", "users")}
        migrate.upgrade(db)
        with db.engine.begin() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # on again
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
            counts = {
                name: conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar()
                for name in ("api_keys", "fields", "results", "signals", "events")
            }
            assert counts == {"api_keys": 1, "fields": 1, "results": 2, "signals": 1, "events": 1}
            assert {name: _index_names(conn, name) for name in before} == before
            new = {"set_id": 1, "date": t, "values": "{}", "version": 1, "created_at": t, "updated_at": t}
            _add(conn, "results", **new, created_by="a", updated_by="a")
            assert (
                conn.exec_driver_sql("SELECT max(id) FROM results").scalar() == 4
            )  # 3 was the deleted one's
            conn.exec_driver_sql("DELETE FROM results WHERE id = 4")
            _add(conn, "results", **new, created_by="a", updated_by="a")
            assert conn.exec_driver_sql("SELECT max(id) FROM results").scalar() == 5
            assert conn.exec_driver_sql("SELECT set_ids FROM users WHERE name = 'lim'").scalar() == "[1]"
            _add(conn, "sets", name="next", kind="analysis_set", created_at=t, updated_at=t)
            assert (
                conn.exec_driver_sql("SELECT max(id) FROM sets").scalar() == 9
            )  # past 8, which e-mails name
    finally:
        db.dispose()


def _add(conn: Any, table: str, **values: object) -> None:
    names = ", ".join(f'"{name}"' for name in values)
    conn.exec_driver_sql(
        f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(values))})", tuple(values.values())
    )


def _index_names(conn: Any, table: str) -> set[str]:
    return {row[1] for row in conn.exec_driver_sql(f"PRAGMA index_list({table})")}


def test_an_orphan_row_from_before_does_not_stop_qhook(tmp_path: Path) -> None:
    """The foreign-key check after migrating ran on every start, so one orphan row (deleted in the
    sqlite3 shell, where foreign keys are off) stopped serve, worker and every CLI command."""
    db = Database(f"sqlite:///{tmp_path / 'orphans.db'}")
    try:
        migrate.upgrade(db)
        with db.engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.execute("PRAGMA foreign_keys=OFF")
            raw.execute(
                "INSERT INTO api_keys (user_id, label, prefix, key_hash, created_at) "
                "VALUES (999, '', 'qhk_x', 'h', '2025-01-01 00:00:00.000000')"
            )
            raw.execute("PRAGMA foreign_keys=ON")
        migrate.upgrade(db)  # nothing to migrate: no check, no refusal
        assert migrate.is_current(db)
    finally:
        db.dispose()


def test_a_new_sqlite_database_and_its_key_are_readable_by_qhooks_user_only(tmp_path: Path) -> None:
    """Results, password hashes and API key hashes were 0644 in a 0755 folder (umask 022)."""
    import os
    import stat

    from qhook.context import open_context
    from qhook.settings import Settings

    data = tmp_path / "var"
    ctx = open_context(Settings(data_dir=data))
    try:
        users.create_user(ctx.db, "mode", "viewer", password="password-mode")
        modes = {
            p.name: stat.S_IMODE(os.stat(p).st_mode)
            for p in (data, data / "qhook.db", data / "qhook.db-wal", data / "secret.key")
        }
    finally:
        ctx.db.dispose()
    assert modes == {"var": 0o700, "qhook.db": 0o600, "qhook.db-wal": 0o600, "secret.key": 0o600}


def test_migration_0010_keeps_the_body_search_triggers_both_ways(tmp_path: Path) -> None:
    """Alembic's batch mode rebuilt SQLite's deliveries table to add a column: every row copied,
    and the body-search triggers on it gone."""
    from alembic import command
    from sqlalchemy import text

    db = Database(f"sqlite:///{tmp_path / 'q.db'}")

    def state() -> tuple[list[str], list[str]]:
        with db.engine.connect() as conn:
            triggers = sorted(
                r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type='trigger'"))
            )
            columns = [r[1] for r in conn.execute(text("PRAGMA table_info(deliveries)"))]
        return triggers, columns

    try:
        migrate.upgrade(db, "0009")
        triggers, _ = state()
        migrate.upgrade(db)
        assert state()[0] == triggers != [] and "probe_failures" in state()[1]
        command.downgrade(migrate.alembic_config(db), "0009")
        assert state()[0] == triggers and "probe_failures" not in state()[1]
    finally:
        db.dispose()
