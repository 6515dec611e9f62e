"""SQLite: the one worker, in a process of its own, is woken by commits in other processes."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qhook.context import AppContext, open_context
from qhook.delivery import doorbell
from qhook.delivery.sender import Sender
from qhook.delivery.worker import Worker, attach_wake
from qhook.services import results, workflows
from qhook.services import sets as sets_service
from qhook.settings import Settings
from qhook.store.db import Database
from tests.conftest import TEST_SECRET_KEY
from tests.support.delivery import receiver, statuses, until
from tests.support.processes import stop

QHOOK = str(Path(sys.executable).parent / "qhook")
FIELDS = [{"name": "batchnumber_", "type": "text", "required": True}]
SLOW_POLL_S = "60"  # far longer than any wait below: only the doorbell can wake the worker in time


@pytest.fixture
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A short path: a Unix socket's path holds at most 107 bytes.
    return tmp_path_factory.mktemp("bell")


@pytest.fixture
def ctx(folder: Path) -> Iterator[AppContext]:
    context = open_context(_settings(folder))
    yield context
    context.db.dispose()


def _settings(folder: Path) -> Settings:
    return Settings(
        data_dir=folder / "var",
        secret_key=TEST_SECRET_KEY,  # type: ignore[arg-type]
        allow_http=True,
        allowed_target_networks="127.0.0.0/8",
    )


def _env(folder: Path) -> dict[str, str]:
    return {
        **os.environ,
        "QHOOK_DATA_DIR": str(folder / "var"),
        "QHOOK_DATABASE_URL": "",
        "QHOOK_SECRET_KEY": TEST_SECRET_KEY,
        "QHOOK_ALLOW_HTTP": "true",
        "QHOOK_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
        "QHOOK_POLL_INTERVAL_S": SLOW_POLL_S,
        "QHOOK_LOG_LEVEL": "WARNING",
    }


def _set_with_workflow(ctx: AppContext, url: str) -> int:
    found = sets_service.create_set(ctx.db, name="Batch release", fields=FIELDS, actor="test")
    workflows.create_workflow(
        ctx,
        {
            "name": "to ERP",
            "set_id": found.id,
            "triggers": {"entry": True},
            "signals": [{"type": "webhook", "url": url, "subject": "Batch {{ batchnumber_ }}"}],
        },
        actor="test",
    )
    return found.id


def _wait_for_bell(path: Path, worker: subprocess.Popen[bytes], *, not_made_at: int | None = None) -> None:
    for _ in range(600):
        if path.is_socket() and path.stat().st_ctime_ns != not_made_at:
            return
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
        time.sleep(0.05)
    raise AssertionError(f"the worker never bound {path}")


async def test_a_commit_in_another_process_wakes_the_sqlite_worker(ctx: AppContext, folder: Path) -> None:
    bell = folder / "var" / doorbell.NAME
    async with receiver() as rx:
        set_id = _set_with_workflow(ctx, rx.url)
        worker = subprocess.Popen(
            [QHOOK, "worker"], env=_env(folder), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            _wait_for_bell(bell, worker)
            await asyncio.sleep(0.5)  # the worker's first claim found nothing; now it idles for 60 s
            for number in range(3):  # each commit rings: not only the first wake-up arrives
                started = time.monotonic()
                results.create_result(ctx, set_id=set_id, values={"batchnumber_": f"B-{number}"}, actor="t")
                await until(lambda n=number + 1: len(rx.received) >= n, timeout=10)
                assert time.monotonic() - started < 5  # not the 60 s poll
            await until(lambda: statuses(ctx).get("succeeded") == 3, timeout=10)
        finally:
            stop(worker)
    assert worker.returncode == 0
    assert not bell.exists()  # a stopped worker takes its socket away


async def test_a_socket_left_by_a_killed_worker_is_replaced(ctx: AppContext, folder: Path) -> None:
    bell = folder / "var" / doorbell.NAME
    bell.parent.mkdir(parents=True, exist_ok=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(bell))
    stale.close()  # the file stays, as after kill -9
    stale_made_at = bell.stat().st_ctime_ns
    async with receiver() as rx:
        set_id = _set_with_workflow(ctx, rx.url)
        worker = subprocess.Popen(
            [QHOOK, "worker"], env=_env(folder), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            _wait_for_bell(bell, worker, not_made_at=stale_made_at)  # bound afresh in the stale one's place
            await asyncio.sleep(0.5)
            results.create_result(ctx, set_id=set_id, values={"batchnumber_": "B-1"}, actor="t")
            await until(lambda: len(rx.received) == 1, timeout=10)
        finally:
            stop(worker)


def test_ringing_with_no_worker_listening_is_silent(folder: Path) -> None:
    ring = doorbell.ringer(folder / doorbell.NAME)
    for _ in range(3):
        ring()  # no socket file: nothing raised, nothing waits
    plain = folder / "plain"
    plain.write_text("not a socket")
    doorbell.ringer(plain)()


def test_a_full_bell_drops_rings_without_blocking(folder: Path) -> None:
    path = folder / doorbell.NAME
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listening.bind(str(path))
    try:
        ring = doorbell.ringer(path)
        started = time.monotonic()
        for _ in range(10_000):  # far more than the socket queues
            ring()
        assert time.monotonic() - started < 5
        listening.setblocking(False)
        assert listening.recv(16) == b"\x01"  # the first ones arrived
    finally:
        listening.close()


def test_a_path_too_long_for_a_socket_means_no_bell(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    assert doorbell.path_for(None, deep) is None
    assert doorbell.path_for(deep / "qhook.db", tmp_path) is None
    assert doorbell.path_for(Path("var/q.db"), tmp_path) == Path("var/worker.wake").absolute()
    assert doorbell.path_for(None, Path("/data")) == Path("/data/worker.wake")
    assert Database("sqlite:///:memory:").file is None  # an in-memory database: the data folder's bell
    doorbell.ringer(None)()  # silent


async def test_a_worker_in_this_process_is_woken_directly_not_through_its_bell(
    ctx: AppContext, folder: Path
) -> None:
    woken: list[str] = []
    worker = Worker(ctx, Sender(ctx.settings))
    worker.wake = lambda: woken.append("direct")  # type: ignore[method-assign]
    ring_before = ctx.wake
    restore = attach_wake(ctx, worker)
    try:
        ctx.wake()
        ctx.wake_here()
        assert woken == ["direct", "direct"]  # no datagram to its own socket on top
    finally:
        restore()
    assert ctx.wake is ring_before
