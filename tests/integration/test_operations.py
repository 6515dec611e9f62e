"""What an operator meets around the database: it away, refusing qhook, or at another schema;
start-up races; settings that stopped or repeated deliveries. Real PostgreSQL (and SQLite)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import ValidationError
from sqlalchemy import text

from qhook.api.app import create_app
from qhook.clock import utcnow
from qhook.context import open_context
from qhook.delivery.recorder import Recorder
from qhook.errors import QhookError, StoreError
from qhook.services import users
from qhook.settings import Settings
from qhook.store import migrate, queue
from qhook.store.db import Database
from tests.conftest import TEST_SECRET_KEY, fresh_postgres_url
from tests.support import pg

CLOSED = "postgresql+psycopg://qhook:secret@127.0.0.1:1/qhook"  # nothing listens on port 1


def _empty_database(server: pg.PgServer, name: str) -> str:
    with psycopg.connect(server.url("postgres").replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url(name)


@pytest.fixture
def away(tmp_path: Path) -> Iterator[Any]:
    ctx = open_context(Settings(database_url=CLOSED, data_dir=tmp_path, secret_key="x" * 43 + "="))
    yield ctx
    ctx.db.dispose()


async def test_the_api_answers_503_json_while_the_database_is_away(away: Any) -> None:
    """The answer was a plain-text 500: counting the request for its rate headers failed too,
    after the 503 had started."""
    app = create_app(away)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://qhook") as client:
        for path in ("/api/v1/sets", "/api/getAllSets?access_token=qhk_x"):
            response = await client.get(path, headers={"Authorization": "Bearer qhk_x"})
            assert response.status_code == 503, response.text
            assert response.json() == {"error": "Database unavailable"}  # no address, no user
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["error"].startswith("Database unavailable: OperationalError: ")
    assert "127.0.0.1" in ready.json()["error"]  # the operator's probe says why


def test_a_database_that_refuses_qhook_stops_it_at_start(pg_server: pg.PgServer, tmp_path: Path) -> None:
    """serve and worker ran on against a database that refuses them or is not migrated, logging
    tracebacks many times a second; one that cannot be reached yet is waited for."""
    missing = Database(pg_server.url("no_such_database"))
    with pytest.raises(StoreError) as refused:
        migrate.require_usable(missing)
    assert 'database "no_such_database" does not exist' in refused.value.for_operators
    missing.dispose()

    empty = Database(_empty_database(pg_server, "not_migrated"))
    with pytest.raises(
        QhookError, match=r"the database schema is at nothing, this qhook needs .*: run qhook migrate"
    ):
        migrate.require_usable(empty)
    empty.dispose()

    unreachable = Database(CLOSED)
    migrate.require_usable(unreachable)  # logged; the process waits for it
    unreachable.dispose()


def test_readiness_follows_the_schema_this_code_expects(pg_server: pg.PgServer) -> None:
    """/readyz compared with the migrations on disk: a newer version installed beside a running
    process took it out of service before anyone migrated; a newer schema (a later version
    migrated it) sent the operator to a `qhook migrate` that failed."""
    db = Database(fresh_postgres_url(pg_server))
    try:
        assert migrate.schema_state(db) == ("current", migrate.head_revision())
        with db.transaction() as tx:
            tx.execute(text("UPDATE alembic_version SET version_num = '0999'"))
        assert migrate.schema_state(db) == ("ahead", "0999")
        with db.transaction() as tx:
            tx.execute(text("UPDATE alembic_version SET version_num = '0005'"))
        assert migrate.schema_state(db) == ("behind", "0005")
    finally:
        db.dispose()


def test_processes_migrating_together_wait_for_each_other(pg_server: pg.PgServer) -> None:
    """Two of three `qhook migrate` started together failed with a traceback (CREATE EXTENSION)."""
    url = _empty_database(pg_server, "together")
    code = "import sys; from qhook.store import migrate; from qhook.store.db import Database; "
    code += "print('found', migrate.upgrade(Database(sys.argv[1])))"
    runs = [
        subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(3)
    ]
    outputs = [run.communicate(timeout=120)[0].decode() for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], outputs
    # One migrated from empty; the others waited and found it done (each said "was empty").
    found = sorted(line for out in outputs for line in out.splitlines() if line.startswith("found "))
    head = migrate.head_revision()
    assert found == sorted([f"found {head}", f"found {head}", "found None"]), outputs
    db = Database(url)
    try:
        assert migrate.is_current(db)
        with db.reading() as tx:  # the lock was given back: nobody holds it now
            held = tx.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")).scalar_one()
        assert held == 0
    finally:
        db.dispose()


def test_the_first_admin_is_made_once_when_processes_start_together(db: Database) -> None:
    """A second process starting on a fresh database crashed on the unique name."""
    made = [users.bootstrap_admin(db) for _ in range(2)]
    assert made[0] is not None and made[1] is None
    from qhook.store import users as user_store

    with db.transaction() as tx:
        assert user_store.insert_first_admin(tx, password_hash="x", now=utcnow()) is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("worker_concurrency", 0),
        ("worker_batch_size", 0),
        ("lease_seconds", 0),
        ("db_pool_size", 1),
        ("log_level", "verbose"),
        ("worker_metrics_port", 99999),
        ("port", 0),
        ("max_body_bytes", -1),  # every POST was refused with 413 "the limit is -1 bytes"
        ("allowed_target_networks", "notanet"),  # a traceback as the worker started
        ("poll_interval_s", 0),
        ("circuit_cool_off_s", -1),
        ("retention_interval_s", 0),
        # Accepted without a word before (an operator's review):
        ("ca_bundle", "/nonexistent.pem"),  # serve's worker died at its first send; /readyz said ready
        ("ca_bundle", __file__),  # not PEM
        ("smtp_url", "mail.example.com:587"),  # no scheme: mail went to localhost:25
        ("smtp_url", "http://mail.example.com"),
        ("smtp_url", "smtp://mail.example.com:99999"),
        ("public_url", "qhook.example.com"),  # the banner said "Open qhook.example.com/ui"
        ("max_chain_depth", -1),
        ("api_rate_limit", "lots"),  # said "rate_limit: ...", not which of the two
        ("ui_rate_limit", "0/minute"),
        ("database_url", "postgresq://qhook:pw@db/qhook"),  # a traceback of SQLAlchemy's plugin loader
        ("database_url", "mysql://qhook:pw@db/qhook"),
    ],
)
def test_settings_that_stopped_or_repeated_deliveries_are_refused(name: str, value: object) -> None:
    """Concurrency 0 claimed rows and never sent them, lease 0 sent one delivery five times, a pool
    of one left the worker's LISTEN connection alone in it; a bad log level was a traceback."""
    with pytest.raises(ValidationError) as refused:
        Settings(**{name: value})
    assert refused.value.errors()[0]["loc"] == (name,)
    assert Settings(log_level="debug").log_level == "DEBUG"


def test_a_bad_database_url_is_not_repeated_in_the_error() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(database_url="postgresq://qhook:hunter2@db/qhook")
    assert "hunter2" not in refused.value.errors()[0]["msg"]
    assert refused.value.errors()[0]["msg"].endswith("or empty (SQLite in QHOOK_DATA_DIR)")


def test_a_data_folder_that_cannot_hold_the_database_is_named(tmp_path: Path) -> None:
    """A data folder path that is a file ended in a FileExistsError traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    settings = Settings(data_dir=blocker / "var", secret_key=TEST_SECRET_KEY)  # type: ignore[arg-type]
    with pytest.raises(QhookError) as refused:
        open_context(settings)
    assert str(refused.value).startswith(f"cannot create the SQLite database at {blocker / 'var'}: ")
    assert "QHOOK_DATA_DIR" in str(refused.value)


def test_good_mail_and_public_urls_and_an_empty_ca_bundle_stand() -> None:
    settings = Settings(
        smtp_url=" smtps://qhook:pw@mail.example.com:465 ",
        public_url="https://qhook.example.com/",
        ca_bundle="",  # type: ignore[arg-type]
    )
    assert settings.smtp_url == "smtps://qhook:pw@mail.example.com:465"
    assert settings.public_url == "https://qhook.example.com/" and settings.ca_bundle is None
    assert Settings(smtp_url="smtp+starttls://localhost").smtp_url == "smtp+starttls://localhost"


def test_the_cli_names_a_bad_ca_bundle_and_rate_limit(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("QHOOK_")},
        "QHOOK_DATA_DIR": str(tmp_path / "var"),
        "QHOOK_CA_BUNDLE": str(tmp_path / "missing.pem"),
        "QHOOK_API_RATE_LIMIT": "lots",
        "COLUMNS": "250",
    }
    said = subprocess.run(
        [sys.executable, "-m", "qhook", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert said.returncode == 1
    assert f"QHOOK_CA_BUNDLE: cannot use {tmp_path / 'missing.pem'}: No such file or directory" in said.stderr
    assert "QHOOK_API_RATE_LIMIT: expected '<count>/<second|minute|hour>'" in said.stderr
    assert "Traceback" not in said.stderr and not (tmp_path / "var").exists()  # nothing half-started


async def test_a_stopping_worker_gives_up_recording_when_the_database_stays_away(
    away: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM during an outage: the recorder tried for ever, so the worker never ended."""
    from qhook.delivery import recorder as recorder_module

    monkeypatch.setattr(recorder_module, "STOP_GRACE_S", 0.2)
    monkeypatch.setattr(recorder_module.asyncio, "sleep", _quick_sleep)
    recorder = Recorder(away.db, asyncio.to_thread, lambda ids: None, batch_size=10)
    recorder.add(None, queue.Finish(1, "succeeded", 1, None, 200, None, None, utcnow()))
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(recorder.run(stop), 30)


async def test_during_an_outage_the_recorder_logs_now_and_then_and_a_stop_waits_one_grace(
    away: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A line a second for as long as the database was away (600 in ten minutes), and a worker
    stopped then waited a grace for each batch (23 s for a 10 s promise), and said "0 outcomes"."""
    import logging
    import time

    from qhook.delivery import recorder as recorder_module

    monkeypatch.setattr(recorder_module, "STOP_GRACE_S", 0.6)
    monkeypatch.setattr(recorder_module.asyncio, "sleep", _quick_sleep)
    recorder = Recorder(away.db, asyncio.to_thread, lambda ids: None, batch_size=10)
    recorder.add(None, queue.Finish(1, "succeeded", 1, None, 200, None, None, utcnow()))
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="qhook.delivery.recorder")
    running = asyncio.create_task(recorder.run(stop))
    await _real_sleep(1.5)  # ~30 tries against the database that is away
    tries = [r for r in caplog.records if getattr(r, "action", "") == "record_retry"]
    assert 1 <= len(tries) <= 3, [r.getMessage() for r in tries]
    assert tries[0].getMessage().startswith("recording outcomes failed: ")
    started = time.monotonic()
    stop.set()
    recorder.op(lambda tx, now: None)  # a second batch, while the first one still waits
    await asyncio.wait_for(running, 30)
    assert time.monotonic() - started < 1.1  # one grace of 0.6 s for both, not one each
    abandoned = [r.getMessage() for r in caplog.records if getattr(r, "action", "") == "record_abandoned"]
    assert abandoned[0].startswith("stopping without recording 1 outcome(s) and 0 other change(s)")
    assert abandoned[1:] == [
        "stopping without recording 0 outcome(s) and 1 other change(s): their deliveries are sent "
        "again when the leases run out"
    ]


_real_sleep = asyncio.sleep


async def _quick_sleep(seconds: float) -> None:
    await _real_sleep(min(seconds, 0.05))


def test_worker_metrics_say_the_database_is_away_instead_of_showing_old_gauges(away: Any, ctx: Any) -> None:
    """During an outage the worker's /metrics served the last queue depth and open circuits as
    if current."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from qhook import metrics

    def scrape(context: Any) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        text = generate_latest(metrics._ScrapeRegistry(context)).decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found.setdefault(sample.name, []).append(sample.value)
        return found

    up = scrape(ctx)
    assert up["qhook_database_up"] == [1.0] and len(up["qhook_queue_depth"]) >= 6
    down = scrape(away)
    assert down["qhook_database_up"] == [0.0]
    assert "qhook_queue_depth" not in down
    assert [v != v for v in down["qhook_open_circuits"]] == [True]  # NaN: no value
    assert scrape(ctx)["qhook_database_up"] == [1.0]


def test_serve_waits_for_a_database_that_cannot_be_reached_yet(
    pg_server: pg.PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """qhook serve logged "waiting for it" and then exited with "Database unavailable" (its first
    user query): started beside PostgreSQL, which came up last, it died. It waits now, and goes on
    once the database answers; refused credentials still stop it at once."""
    env = {
        **os.environ,
        "QHOOK_DATA_DIR": str(tmp_path / "var"),
        "QHOOK_DATABASE_URL": CLOSED,
        "QHOOK_SECRET_KEY": TEST_SECRET_KEY,
        "QHOOK_PORT": "1",  # never reached while it waits
    }
    said = tmp_path / "serve.err"
    with said.open("w") as err_file:
        serving = subprocess.Popen(
            [sys.executable, "-m", "qhook", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=err_file
        )
    try:
        deadline = time.monotonic() + 30  # however slowly it starts on a busy machine
        while "waiting for it" not in said.read_text():
            assert serving.poll() is None and time.monotonic() < deadline, said.read_text()
            time.sleep(0.1)
        time.sleep(3)  # it used to exit right after saying so
        assert serving.poll() is None, said.read_text()
    finally:
        serving.terminate()
        serving.wait(20)
    assert "Traceback" not in said.read_text()

    slept: list[float] = []
    tries = iter([False, False, True])
    reachable = Database(fresh_postgres_url(pg_server))
    real = migrate.current_revision

    def flaky(db: Database) -> str | None:
        if not next(tries):
            raise StoreError("Database unavailable", reason="connection refused")
        return real(db)

    monkeypatch.setattr(migrate, "current_revision", flaky)
    try:
        migrate.wait_for(reachable, sleep=slept.append)
    finally:
        reachable.dispose()
    monkeypatch.undo()
    assert slept == [1.0, 2.0]
    missing = Database(pg_server.url("no_such_database"))
    with pytest.raises(StoreError):
        migrate.wait_for(missing, sleep=slept.append)
    missing.dispose()
    assert slept == [1.0, 2.0]  # refused at once, not waited for


def test_a_schema_newer_than_this_qhook_is_left_alone_on_sqlite(tmp_path: Path) -> None:
    """A later qhook migrated the database, and this one is started again (a rollback of the
    program): on SQLite, which migrates at start, Alembic stopped it with a traceback ("Can't
    locate revision"), and `qhook migrate` did the same on both databases."""
    settings = Settings(data_dir=tmp_path / "var", secret_key=TEST_SECRET_KEY)  # type: ignore[arg-type]
    first = open_context(settings)
    with first.db.transaction() as tx:
        tx.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    first.db.dispose()
    again = open_context(settings)  # migrates at start: nothing to do
    assert migrate.schema_state(again.db) == ("ahead", "0999")
    again.db.dispose()
    env = {**os.environ, "QHOOK_DATA_DIR": str(tmp_path / "var"), "QHOOK_SECRET_KEY": TEST_SECRET_KEY}
    done = subprocess.run(
        [sys.executable, "-m", "qhook", "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stdout.split())
    assert f"schema at 0999, newer than this qhook's {migrate.head_revision()}: nothing to migrate" in said
    assert "Traceback" not in done.stderr


def test_a_worker_started_before_its_database_checks_the_key_once_it_answers(
    ctx_pg_with_secret: str, tmp_path: Path
) -> None:
    """Started while PostgreSQL was down, `qhook worker` skipped its start-up checks: with the wrong
    key it ran and used up its deliveries' retries ("A stored secret cannot be decrypted"), and on a
    database never migrated it logged a traceback per cycle (an operator's review)."""
    from cryptography.fernet import Fernet

    port = pg.free_port()
    target = ctx_pg_with_secret
    env = {
        **os.environ,
        "QHOOK_DATA_DIR": str(tmp_path / "var"),
        "QHOOK_DATABASE_URL": target.replace(f":{pg.port_of(target)}/", f":{port}/"),
        "QHOOK_SECRET_KEY": Fernet.generate_key().decode(),  # not the key the secret was sealed with
    }
    said = tmp_path / "worker.err"
    with said.open("w") as err_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "qhook", "worker"], env=env, stdout=err_file, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while "waiting for it" not in said.read_text():
            assert worker.poll() is None and time.monotonic() < deadline, said.read_text()
            time.sleep(0.1)
        with _forwarding(port, pg.port_of(target)):
            assert worker.wait(30) == 1, said.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    text_said = said.read_text()
    assert "does not open the secrets stored in this database" in text_said, text_said
    assert "worker started" not in text_said and "Traceback" not in text_said


@pytest.fixture
def ctx_pg_with_secret(pg_server: pg.PgServer, tmp_path: Path) -> Iterator[str]:
    """A migrated PostgreSQL database holding one signing secret sealed with the tests' key."""
    url = fresh_postgres_url(pg_server)
    settings = Settings(data_dir=tmp_path / "sealed", database_url=url, secret_key=TEST_SECRET_KEY)  # type: ignore[arg-type]
    sealed = open_context(settings)
    try:
        from tests.support.delivery import make_signal

        make_signal(sealed, "http://127.0.0.1:9/hook")
    finally:
        sealed.db.dispose()
    yield url


@contextlib.contextmanager
def _forwarding(port: int, to_port: int) -> Iterator[None]:
    """A TCP forwarder on 127.0.0.1:``port`` to ``to_port`` while the block runs: the database
    "comes up" at that address."""
    forwarder = subprocess.Popen(
        [sys.executable, "-c", _FORWARDER, str(port), str(to_port)], stdout=subprocess.PIPE
    )
    try:
        assert forwarder.stdout is not None and forwarder.stdout.readline().strip() == b"listening"
        yield
    finally:
        forwarder.kill()
        forwarder.wait()


_FORWARDER = """
import asyncio, sys

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()

async def main(port, to_port):
    async def handle(reader, writer):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", to_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("listening", flush=True)
    await server.serve_forever()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""
