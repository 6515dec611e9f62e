"""Wake-ups instead of polling: a commit through the API reaches an idle worker at once.

PostgreSQL: the API's commit NOTIFYs, and a separate ``qhook worker`` process LISTENing wakes.
SQLite (``qhook serve``): the API's commit calls ``ctx.wake`` of the worker in the same process.
Both workers are told to poll every 30 s. (The worker's maintenance tick still claims at least once
a second whatever the poll interval, so "prompt" is judged well below a second, over several rounds.)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from qhook.api.app import create_app
from qhook.context import AppContext, open_context
from qhook.delivery import worker as worker_mod
from qhook.services import users
from qhook.settings import Settings
from tests.conftest import TEST_SECRET_KEY, auth, fresh_postgres_url, fresh_sqlite_url
from tests.support import pg
from tests.support.delivery import Receiver, enqueue, make_signal, receiver, running_worker, until
from tests.support.workflows import make_set

QHOOK = str(Path(sys.executable).parent / "qhook")
POLL_S = 30.0
ROUNDS = 8


def context(tmp_path: Path, url: str) -> AppContext:
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=url,
        secret_key=TEST_SECRET_KEY,  # type: ignore[arg-type]
        api_rate_limit="100000/minute",
        allow_http=True,
        allowed_target_networks="127.0.0.0/8",
        poll_interval_s=POLL_S,
    )
    return open_context(settings)


@pytest.fixture
def pg_ctx(pg_server: pg.PgServer, tmp_path: Path) -> Iterator[AppContext]:
    ctx = context(tmp_path, fresh_postgres_url(pg_server))
    yield ctx
    ctx.db.dispose()


@pytest.fixture
def sqlite_ctx(sqlite_template: Path, tmp_path: Path) -> Iterator[AppContext]:
    ctx = context(tmp_path, fresh_sqlite_url(sqlite_template, tmp_path / "db"))
    yield ctx
    ctx.db.dispose()


@pytest.fixture
async def pg_api(pg_ctx: AppContext) -> AsyncIterator[httpx.AsyncClient]:
    """The API in this process, with no worker in it: only NOTIFY can reach a worker."""
    async with api_client(pg_ctx) as client:
        yield client


@asynccontextmanager
async def api_client(ctx: AppContext, app: FastAPI | None = None) -> AsyncIterator[httpx.AsyncClient]:
    users.create_user(ctx.db, "alice", "admin", password="password-alice")
    key = users.create_api_key(ctx.db, "alice", label="tests")[1]
    transport = httpx.ASGITransport(app=app or create_app(ctx))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=auth(key)
    ) as client:
        yield client


class Output:
    """Drains a process's stderr in a thread (a full pipe would stall the worker) and keeps it."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        assert process.stderr is not None
        stream = process.stderr
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in iter(stream.readline, b""):  # type: ignore[attr-defined]
            self.lines.append(line.decode(errors="replace"))

    def text(self) -> str:
        return "".join(self.lines)


def start_worker(ctx: AppContext, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "QHOOK_DATA_DIR": str(tmp_path / "worker-var"),
        "QHOOK_DATABASE_URL": ctx.settings.database_url,
        "QHOOK_SECRET_KEY": TEST_SECRET_KEY,
        "QHOOK_ALLOW_HTTP": "true",
        "QHOOK_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
        "QHOOK_POLL_INTERVAL_S": str(POLL_S),
        "QHOOK_LOG_LEVEL": "INFO",
    }
    return subprocess.Popen([QHOOK, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def latencies(api: httpx.AsyncClient, rx: Receiver, set_id: int) -> list[float]:
    """Seconds from each result's API call to its webhook at the receiver, one at a time, idle between."""
    found = []
    for n in range(ROUNDS):
        await _idle()
        before = len(rx.received)
        started = time.monotonic()
        response = await api.post(
            f"/api/v1/sets/{set_id}/results", json={"values": {"batchnumber_": f"L-{n}"}}
        )
        assert response.status_code == 201, response.text
        await until(lambda: len(rx.received) > before, timeout=POLL_S / 2, interval=0.005)  # noqa: B023
        found.append(rx.received[before].at - started)
    return found


async def _idle() -> None:
    await asyncio.sleep(0.35 + 0.2 * (time.monotonic() % 1))  # a varied phase against any timer


async def make_workflow(api: httpx.AsyncClient, set_id: int, url: str) -> None:
    response = await api.post(
        "/api/v1/workflows",
        json={
            "name": "wake",
            "set_id": set_id,
            "triggers": {"entry": True},
            "signals": [{"type": "webhook", "url": url}],
        },
    )
    assert response.status_code == 201, response.text


def judge(found: list[float]) -> None:
    # A wake-up takes tens of milliseconds. Polling (even once a second, whatever the poll
    # interval says) puts most of them near half a second and fails here.
    assert max(found) < 3.0, found
    assert statistics.median(found) < 0.25, found
    assert sum(1 for x in found if x < 0.4) >= ROUNDS - 1, found


@pytest.mark.postgres
async def test_notify_wakes_a_separate_worker_process(
    pg_ctx: AppContext, pg_api: httpx.AsyncClient, tmp_path: Path
) -> None:
    async with receiver() as rx:
        set_id = await make_set(pg_api)
        await make_workflow(pg_api, set_id, rx.url)
        process = start_worker(pg_ctx, tmp_path)
        output = Output(process)
        try:
            await until(lambda: "worker started" in output.text(), timeout=30)
            found = await latencies(pg_api, rx, set_id)
            assert process.poll() is None, output.text()
        finally:
            stop(process)
    judge(found)
    assert process.returncode == 0, output.text()


async def test_api_commit_wakes_the_serve_worker_on_sqlite(sqlite_ctx: AppContext) -> None:
    # The app as `qhook serve` builds it: the worker runs in the API's loop via its lifespan hook.
    app = create_app(sqlite_ctx, lifespan_hooks=[worker_mod.start_in_app])
    async with receiver() as rx, app.router.lifespan_context(app), api_client(sqlite_ctx, app) as api:
        set_id = await make_set(api)
        await make_workflow(api, set_id, rx.url)
        found = await latencies(api, rx, set_id)
    judge(found)


def test_inserting_deliveries_notifies_at_commit_only(pg_ctx: AppContext) -> None:
    """The trigger of migration 0005: any insert into deliveries wakes the listeners when it
    commits, never when it rolls back, and once per transaction however many rows it wrote."""
    import psycopg
    from sqlalchemy import text

    listener = psycopg.connect(pg_ctx.db.url.replace("+psycopg", ""), autocommit=True)
    listener.execute("LISTEN qhook_deliveries")

    def heard() -> int:
        return sum(1 for _ in listener.notifies(timeout=0.3, stop_after=10))

    insert = text(
        "INSERT INTO deliveries (webhook_id, action, url, endpoint, body, status, created_at, updated_at) "
        "VALUES (:w, 'new', 'http://127.0.0.1:9/h', 'http://127.0.0.1:9', '{}', 'pending', now(), now())"
    )

    class Undo(Exception):
        pass

    try:
        with pytest.raises(Undo), pg_ctx.db.transaction() as tx:
            tx.execute(insert, {"w": "msg_rolled_back"})
            raise Undo
        assert heard() == 0
        with pg_ctx.db.transaction() as tx:
            for n in range(3):
                tx.execute(insert, {"w": f"msg_{n}"})
            assert heard() == 0  # not before the commit
        assert heard() == 1
    finally:
        listener.close()


@pytest.mark.postgres
async def test_the_serve_worker_is_woken_once_per_commit_on_postgres(
    pg_ctx: AppContext, pg_api: httpx.AsyncClient
) -> None:
    """`qhook serve` on PostgreSQL: the API's commit wakes its in-process worker directly, and the
    NOTIFY of that same commit comes back through the worker's listener. It used to wake the worker
    a second time, and every second wake-up was a claim that found nothing."""
    async with receiver() as rx:
        set_id = await make_set(pg_api)
        await make_workflow(pg_api, set_id, rx.url)
        async with running_worker(pg_ctx) as worker:
            restore = worker_mod.attach_wake(pg_ctx, worker)  # as `qhook serve` does
            try:
                await asyncio.sleep(0.3)  # the first round's claims are done
                woken_before = worker._wakes
                found = await latencies(pg_api, rx, set_id)
                await asyncio.sleep(0.3)  # time for a NOTIFY still on its way
                woken = worker._wakes - woken_before
            finally:
                restore()
    judge(found)
    assert woken <= ROUNDS, f"{woken} wake-ups for {ROUNDS} commits"


@pytest.mark.postgres
async def test_the_serve_worker_still_hears_other_processes(pg_ctx: AppContext, tmp_path: Path) -> None:
    """Only this process's own NOTIFYs are passed over: a commit through another connection pool
    (another process: the CLI, an API started with --no-worker) still wakes the worker at once."""
    other = context(tmp_path / "other", pg_ctx.settings.database_url)
    try:
        async with receiver() as rx:
            signal_id = make_signal(pg_ctx, rx.url)
            async with running_worker(pg_ctx) as worker:
                restore = worker_mod.attach_wake(pg_ctx, worker)
                try:
                    found = []
                    for n in range(ROUNDS):
                        await _idle()
                        started = time.monotonic()
                        await asyncio.to_thread(enqueue, other, signal_id, rx.url, [f'{{"n": {n}}}'])
                        await until(lambda: len(rx.received) > n, timeout=POLL_S / 2, interval=0.005)  # noqa: B023
                        found.append(rx.received[n].at - started)
                finally:
                    restore()
    finally:
        other.db.dispose()
    judge(found)


@pytest.mark.postgres
def test_the_database_knows_its_own_backends(pg_ctx: AppContext) -> None:
    from sqlalchemy import text

    with pg_ctx.db.reading() as tx:
        pid = tx.execute(text("SELECT pg_backend_pid()")).scalar_one()
    assert pid in pg_ctx.db.backend_pids
    pg_ctx.db.dispose()
    assert pid not in pg_ctx.db.backend_pids
