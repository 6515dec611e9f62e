"""Several ``qhook worker`` processes on one PostgreSQL queue; one worker only on SQLite."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import text

from qhook.context import AppContext
from qhook.store import queue
from tests.conftest import TEST_SECRET_KEY, fresh_postgres_url
from tests.support import pg
from tests.support.contexts import shared_context
from tests.support.delivery import enqueue, make_signal, receiver, statuses, until
from tests.support.processes import stop
from tests.support.serve import serving

QHOOK = str(Path(sys.executable).parent / "qhook")


def worker_env(tmp_path: Path, database_url: str, *, lease_seconds: int = 3) -> dict[str, str]:
    """Short leases by default, so a killed worker's work is taken over within the test."""
    return {
        **os.environ,
        "QHOOK_DATA_DIR": str(tmp_path / "var"),
        "QHOOK_DATABASE_URL": database_url,
        "QHOOK_SECRET_KEY": TEST_SECRET_KEY,
        "QHOOK_ALLOW_HTTP": "true",
        "QHOOK_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
        "QHOOK_LEASE_SECONDS": str(lease_seconds),
        "QHOOK_POLL_INTERVAL_S": "0.2",
        "QHOOK_LOG_LEVEL": "WARNING",
    }


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([QHOOK, "worker", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def pg_ctx(pg_server: pg.PgServer, tmp_path: Path) -> Iterator[AppContext]:
    with shared_context(tmp_path, fresh_postgres_url(pg_server)) as context:
        yield context


def _listening(ctx: AppContext) -> int:
    """Sessions of this database whose last statement was the workers' LISTEN."""
    with ctx.db.reading() as tx:
        found = tx.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = :listen"
            ),
            {"listen": f"LISTEN {queue.NOTIFY_CHANNEL}"},
        ).scalar_one()
    return int(found)


@pytest.mark.postgres
async def test_two_workers_share_a_queue_without_double_sends(pg_ctx: AppContext, tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(0.005)
        return web.Response(text="ok")

    async with receiver(handler) as rx:
        signal_id = make_signal(pg_ctx, rx.url, max_in_flight=20)
        total = 600
        # A production-like lease: with both workers alive, no lease may run out and no row go twice.
        env = worker_env(tmp_path, pg_ctx.settings.database_url, lease_seconds=60)
        workers = [start_worker(env, "--concurrency", "20") for _ in range(2)]
        try:
            # Both listening (so both running, their signal handlers in place) before any work:
            # a fast worker could otherwise send all 600 while the other is still starting, and
            # the SIGTERM below would then find that one without its handler.
            await until(lambda: _listening(pg_ctx) == 2, timeout=30)
            enqueue(pg_ctx, signal_id, rx.url, [f'{{"n": {i}}}' for i in range(total)])
            await until(lambda: statuses(pg_ctx).get("succeeded") == total, timeout=60)
        finally:
            for process in workers:
                stop(process)
    counts = Counter(r.headers["webhook-id"] for r in rx.received)
    assert len(counts) == total
    assert max(counts.values()) == 1  # no delivery sent twice
    codes = [p.returncode for p in workers]
    assert codes == [0, 0], (codes, [p.stderr.read() for p in workers if p.stderr])


@pytest.mark.postgres
async def test_kill_9_mid_batch_loses_nothing(pg_ctx: AppContext, tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)
        return web.Response(text="ok")

    async with receiver(handler) as rx:
        signal_id = make_signal(pg_ctx, rx.url)
        total = 200
        enqueue(pg_ctx, signal_id, rx.url, [f'{{"n": {i}}}' for i in range(total)])
        env = worker_env(tmp_path, pg_ctx.settings.database_url)
        first = start_worker(env)
        second = None
        try:
            await until(lambda: len(rx.received) >= 30, timeout=30)
            first.send_signal(signal.SIGKILL)  # mid-batch: it holds leases on the rest
            first.wait()
            assert statuses(pg_ctx).get("succeeded", 0) < total
            second = start_worker(env)
            await until(lambda: statuses(pg_ctx).get("succeeded") == total, timeout=60)
        finally:
            stop(first)
            if second is not None:
                stop(second)
    received = {r.headers["webhook-id"] for r in rx.received}
    assert len(received) == total  # every delivery reached the receiver at least once


def _wait_for_lock(tmp_path: Path, worker: subprocess.Popen[bytes]) -> None:
    """Until ``worker`` holds the SQLite worker lock (its pid in the file)."""
    lock = tmp_path / "var" / "worker.lock"
    for _ in range(300):
        if lock.exists() and lock.read_text().strip() == str(worker.pid):
            return
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
        time.sleep(0.1)
    raise AssertionError(f"the worker never took {lock}")


def test_sqlite_refuses_a_second_worker(tmp_path: Path) -> None:
    env = worker_env(tmp_path, "")
    first = start_worker(env)
    try:
        _wait_for_lock(tmp_path, first)
        second = subprocess.run([QHOOK, "worker"], env=env, capture_output=True, timeout=60)
        assert second.returncode == 1
        assert b"Another qhook worker already runs against this SQLite database" in second.stderr
        assert first.poll() is None  # the first one is unharmed
    finally:
        stop(first)
    assert first.returncode == 0


def test_sqlite_refuses_a_worker_beside_serve_with_its_worker(tmp_path: Path) -> None:
    """serve took the lock and dropped it at once (the lock object was not kept): a `qhook
    worker` started beside it ran as a second worker."""
    env = worker_env(tmp_path, "")
    port = pg.free_port()
    with serving(
        ["serve", "--port", str(port)], env=env, cwd=tmp_path, log=tmp_path / "serve.log", port=port
    ) as (
        _,
        serve,
    ):
        second = subprocess.run([QHOOK, "worker"], env=env, capture_output=True, timeout=60)
        assert second.returncode == 1, second.stderr
        assert b"Another qhook worker already runs against this SQLite database" in second.stderr
        assert serve.poll() is None


def test_sqlite_serve_with_its_worker_beside_a_running_worker_says_what_to_run(tmp_path: Path) -> None:
    env = worker_env(tmp_path, "")
    first = start_worker(env)
    try:
        _wait_for_lock(tmp_path, first)
        serve = subprocess.run(
            [QHOOK, "serve", "--port", str(pg.free_port())], env=env, capture_output=True, timeout=60
        )
        assert serve.returncode == 1
        assert b"Another qhook worker already runs against this SQLite database" in serve.stderr
        assert b"qhook serve --no-worker" in serve.stderr
        assert first.poll() is None
    finally:
        stop(first)
