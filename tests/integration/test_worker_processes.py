"""``qhook worker --processes N``: one command, N delivery processes on the shared queue."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from qhook.context import AppContext
from qhook.delivery import fleet
from tests.conftest import TEST_SECRET_KEY, fresh_postgres_url
from tests.support import pg
from tests.support.contexts import shared_context
from tests.support.delivery import enqueue, make_signal, receiver, statuses, until
from tests.support.processes import stop
from tests.support.serve import serving
from tests.support.smtp import report, smtp_server

QHOOK = str(Path(sys.executable).parent / "qhook")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AppContext]:
    url = fresh_postgres_url(request.getfixturevalue("pg_server")) if request.param == "postgres" else ""
    with shared_context(tmp_path, url) as context:
        yield context


@pytest.fixture
def sqlite_ctx(tmp_path: Path) -> Iterator[AppContext]:
    with shared_context(tmp_path) as context:
        yield context


def start(ctx: AppContext, *args: str, **extra: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "QHOOK_DATA_DIR": str(ctx.settings.data_dir),
        "QHOOK_DATABASE_URL": ctx.settings.database_url,
        "QHOOK_SECRET_KEY": TEST_SECRET_KEY,
        "QHOOK_ALLOW_HTTP": "true",
        "QHOOK_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
        "QHOOK_POLL_INTERVAL_S": "0.2",
        "QHOOK_LOG_LEVEL": "INFO",
        **extra,
    }
    return subprocess.Popen([QHOOK, "worker", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def start_two(ctx: AppContext, port: int, **extra: str) -> subprocess.Popen[bytes]:
    """``qhook worker --processes 2``, process i serving metrics on ``port`` + i."""
    return start(ctx, "--processes", "2", "--metrics-port", str(port), **extra)


def both_up(port: int) -> bool:
    return sent_by(port) is not None and sent_by(port + 1) is not None


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the spawn start method leaves a resource tracker
    too: only the delivery processes are counted, by their command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if parent == pid and b"spawn_main" in command:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def sent_by(port: int) -> float | None:
    """Succeeded deliveries counted by the process serving metrics on ``port`` (None: not up)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.TransportError:
        return None
    for line in text.splitlines():
        if line.startswith('qhook_deliveries_total{outcome="succeeded"}'):
            return float(line.rsplit(" ", 1)[1])
    return None


class Concurrency:
    """A receiver handler that answers after ``delay_s`` and keeps the most requests at once."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.now = 0
        self.most = 0

    async def __call__(self, request: web.Request) -> web.Response:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.now -= 1
        return web.Response(text="ok")


async def test_the_processes_share_the_queue_and_split_max_in_flight(any_ctx: AppContext) -> None:
    port = pg.free_ports(2)
    handler = Concurrency(0.3)
    async with receiver(handler) as rx:
        signal_id = make_signal(any_ctx, rx.url, max_in_flight=2)
        # Batches of 2: a process holds at most 2 rows of the endpoint, so both get some.
        process = start_two(any_ctx, port, QHOOK_WORKER_BATCH_SIZE="2")
        try:
            await until(lambda: both_up(port), timeout=30)
            first_pid = process.pid
            assert len(children(first_pid)) == 1
            total = 12
            enqueue(any_ctx, signal_id, rx.url, [f'{{"n": {i}}}' for i in range(total)])
            any_ctx.wake()
            await until(lambda: statuses(any_ctx).get("succeeded") == total, timeout=60)
            by_process = [sent_by(port), sent_by(port + 1)]
        finally:
            helpers = children(process.pid)
            stop(process)
        errors = process.stderr.read() if process.stderr else b""
    assert process.returncode == 0, errors
    assert not [pid for pid in helpers if alive(pid)]  # stopped with the command
    counts = Counter(r.headers["webhook-id"] for r in rx.received)
    assert len(counts) == total and max(counts.values()) == 1  # each sent once
    # Both processes sent, each one request at a time: max_in_flight 2 split in two.
    assert all(n is not None and n >= 1 for n in by_process), by_process
    assert sum(n or 0 for n in by_process) == total
    assert handler.most == 2
    assert errors.count(b"worker started") == 2 and errors.count(b"worker stopped") == 2


async def test_a_ring_of_the_doorbell_wakes_every_process_on_sqlite(
    sqlite_ctx: AppContext, tmp_path: Path
) -> None:
    ctx = sqlite_ctx
    port = pg.free_ports(2)
    handler = Concurrency(1.0)
    async with receiver(handler) as rx:
        signal_id = make_signal(ctx, rx.url, max_in_flight=2)
        # Polls every 30 s: only a wake-up brings the second process in within the test.
        process = start_two(
            ctx,
            port,
            QHOOK_WORKER_BATCH_SIZE="1",
            QHOOK_POLL_INTERVAL_S="30",
        )
        try:
            await until(lambda: both_up(port), timeout=30)
            await until(lambda: (tmp_path / "var" / "worker.wake.1").exists(), timeout=10)
            # Both processes have looked once and found nothing: they idle for 30 s now.
            await asyncio.sleep(1.0)
            enqueue(ctx, signal_id, rx.url, ['{"n": 1}', '{"n": 2}'])
            ctx.wake()  # what an API commit in `qhook serve --no-worker` does
            await until(lambda: statuses(ctx).get("succeeded") == 2, timeout=10)
        finally:
            stop(process)
    assert process.returncode == 0
    # The first process took one (batch of 1, one in flight) and passed the ring on: the second
    # took the other at once, so both were at the receiver together.
    assert handler.most == 2
    assert abs(rx.received[0].at - rx.received[1].at) < 0.9


async def killed_and_started_again(process: subprocess.Popen[bytes], helper: int, port: int) -> int:
    """SIGKILL process 1 (``helper``); the pid of the process 1 started in its place, once it serves."""
    os.kill(helper, signal.SIGKILL)
    await until(lambda: [p for p in children(process.pid) if p != helper and alive(p)], timeout=20)
    await until(lambda: sent_by(port + 1) is not None, timeout=30)  # the new one runs
    [again] = children(process.pid)
    return again


async def twenty_delivered(ctx: AppContext, signal_id: int, url: str) -> None:
    ids = enqueue(ctx, signal_id, url, [f'{{"n": {i}}}' for i in range(20)])
    ctx.wake()
    await until(lambda: statuses(ctx).get("succeeded") == len(ids), timeout=30)


async def test_a_process_that_ends_is_started_again(sqlite_ctx: AppContext) -> None:
    ctx = sqlite_ctx
    port = pg.free_ports(2)
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url)
        process = start_two(ctx, port, QHOOK_LEASE_SECONDS="3")
        try:
            await until(lambda: sent_by(port + 1) is not None, timeout=30)
            [helper] = children(process.pid)
            await killed_and_started_again(process, helper, port)
            await twenty_delivered(ctx, signal_id, rx.url)
        finally:
            stop(process)
        errors = process.stderr.read() if process.stderr else b""
    assert process.returncode == 0, errors
    assert b"delivery process 1 ended (exit status -9); starting it again in 1 s" in errors


async def test_cpu_affinity_binds_process_i_to_the_ith_cpu_again_after_a_restart(
    sqlite_ctx: AppContext,
) -> None:
    ctx = sqlite_ctx
    cpus = tuple(sorted(os.sched_getaffinity(0)))  # the command's, inherited from this process
    first, second = fleet.cpu_of(0, cpus), fleet.cpu_of(1, cpus)
    port = pg.free_ports(2)
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url)
        process = start(
            ctx, "--processes", "2", "--metrics-port", str(port), "--cpu-affinity", QHOOK_LEASE_SECONDS="3"
        )
        try:
            await until(lambda: both_up(port), timeout=30)
            [helper] = children(process.pid)
            assert os.sched_getaffinity(process.pid) == {first}
            assert os.sched_getaffinity(helper) == {second}
            # Started again by process 0, bound to one CPU, it binds itself to its own again.
            again = await killed_and_started_again(process, helper, port)
            assert os.sched_getaffinity(again) == {second}
            await twenty_delivered(ctx, signal_id, rx.url)
        finally:
            stop(process)
        errors = process.stderr.read() if process.stderr else b""
    assert process.returncode == 0, errors
    assert errors.count(f"delivery process 0 bound to CPU {first}".encode()) == 1
    assert errors.count(f"delivery process 1 bound to CPU {second}".encode()) == 2


async def test_the_other_processes_stop_when_the_first_is_killed(
    sqlite_ctx: AppContext, tmp_path: Path
) -> None:
    ctx = sqlite_ctx
    port = pg.free_ports(3)
    # --no-cpu-affinity wins over the setting: no process is bound.
    process = start(
        ctx,
        "--processes",
        "3",
        "--metrics-port",
        str(port),
        "--no-cpu-affinity",
        QHOOK_WORKER_CPU_AFFINITY="true",
    )
    try:
        await until(lambda: sent_by(port + 1) is not None and sent_by(port + 2) is not None, timeout=30)
        helpers = children(process.pid)
        assert len(helpers) == 2
        unbound = os.sched_getaffinity(0)
        assert [os.sched_getaffinity(pid) for pid in (process.pid, *helpers)] == [unbound] * 3
        process.send_signal(signal.SIGKILL)
        process.wait()
        # Nothing in flight: each stops at once (a SIGKILL'd command left them delivering before,
        # beside a new worker that took the SQLite lock).
        await until(lambda: not [pid for pid in helpers if alive(pid)], timeout=20)
    finally:
        stop(process)
        for pid in helpers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not (tmp_path / "var" / "worker.wake.1").exists()  # each closed its bell


def test_metrics_ports_past_65535_are_refused(sqlite_ctx: AppContext) -> None:
    ctx = sqlite_ctx
    process = start(ctx, "--processes", "3", "--metrics-port", "65534")
    try:
        process.wait(30)
    finally:
        stop(process)
    errors = process.stderr.read() if process.stderr else b""
    assert process.returncode == 1
    assert b"Cannot serve metrics on ports 65534 to 65536" in errors


async def test_serve_runs_the_other_processes_of_its_worker(sqlite_ctx: AppContext, tmp_path: Path) -> None:
    ctx = sqlite_ctx
    port, metrics_port = pg.free_port(), pg.free_ports(2)
    handler = Concurrency(0.5)
    env = {
        **os.environ,
        "QHOOK_DATA_DIR": str(tmp_path / "var"),
        "QHOOK_SECRET_KEY": TEST_SECRET_KEY,
        "QHOOK_ALLOW_HTTP": "true",
        "QHOOK_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
        "QHOOK_PORT": str(port),
        "QHOOK_WORKER_PROCESSES": "2",
        "QHOOK_WORKER_METRICS_PORT": str(metrics_port),
        "QHOOK_WORKER_BATCH_SIZE": "1",
        "QHOOK_POLL_INTERVAL_S": "0.2",
        "QHOOK_WORKER_CPU_AFFINITY": "true",
    }
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    async with receiver(handler) as rx:
        signal_id = make_signal(ctx, rx.url, max_in_flight=2)
        with serving(["serve"], env=env, cwd=tmp_path, log=tmp_path / "serve.log", port=port) as (_, process):
            await until(lambda: sent_by(metrics_port + 1) is not None, timeout=30)
            [helper] = children(process.pid)
            # Serve's own process answers the API too: only its other delivery process is bound.
            assert os.sched_getaffinity(process.pid) == set(cpus)
            assert os.sched_getaffinity(helper) == {fleet.cpu_of(1, cpus)}
            enqueue(ctx, signal_id, rx.url, [f'{{"n": {i}}}' for i in range(6)])
            ctx.wake()
            await until(lambda: statuses(ctx).get("succeeded") == 6, timeout=30)
            by_helper = sent_by(metrics_port + 1)
            process.send_signal(signal.SIGINT)
            process.wait(30)
        await until(lambda: not alive(helper), timeout=20)
    assert process.returncode == 0, (tmp_path / "serve.log").read_text()
    assert by_helper is not None and by_helper >= 1  # process 1 sent some
    assert handler.most == 2  # one each: max_in_flight 2 split in two


def test_serve_runs_its_processes_without_metrics_when_the_ports_pass_65535(
    sqlite_ctx: AppContext, tmp_path: Path
) -> None:
    """``qhook worker`` refuses such a range; serve logs why and runs on (its API is up)."""
    port = pg.free_port()
    env = {
        **os.environ,
        "QHOOK_DATA_DIR": str(tmp_path / "var"),
        "QHOOK_SECRET_KEY": TEST_SECRET_KEY,
        "QHOOK_PORT": str(port),
        "QHOOK_WORKER_PROCESSES": "2",
        "QHOOK_WORKER_METRICS_PORT": "65535",
    }
    log = tmp_path / "serve.log"
    with serving(["serve"], env=env, cwd=tmp_path, log=log, port=port) as (_, process):
        assert len(children(process.pid)) == 1, log.read_text()
    assert process.returncode == 0, log.read_text()
    assert "Cannot serve metrics on ports 65535 to 65536: the last port is 65535" in log.read_text()
    assert "the delivery processes serve no metrics" in log.read_text()


async def test_ordered_deliveries_keep_their_order_across_the_processes(any_ctx: AppContext) -> None:
    port = pg.free_ports(2)

    async def jittery(request: web.Request) -> web.Response:
        # Uneven answer times: without the order rule a later event of a result would overtake.
        # The results' first events take half a second: the first process holds at most 3 of the
        # 4 (QHOOK_WORKER_BATCH_SIZE), so the second takes the fourth meanwhile, woken by its bell
        # or by its own look every 0.2 s. (Answered at once, the first process at times sent all
        # 24 before a loaded machine let the second look.)
        if b'"n": 0}' in await request.read():
            await asyncio.sleep(0.5)
        else:
            await asyncio.sleep(0.01 * (len(rx.received) % 4))
        return web.Response(text="ok")

    async with receiver(jittery) as rx:
        signal_id = make_signal(any_ctx, rx.url, ordered=True)
        process = start_two(any_ctx, port, QHOOK_WORKER_BATCH_SIZE="3", QHOOK_POLL_INTERVAL_S="0.2")
        try:
            await until(lambda: both_up(port), timeout=30)
            expected: dict[int, list[str]] = {}
            for result_id in range(1, 5):
                bodies = [f'{{"result": {result_id}, "n": {n}}}' for n in range(6)]
                enqueue(any_ctx, signal_id, rx.url, bodies, result_id=result_id, ordered=True)
                expected[result_id] = bodies
            any_ctx.wake()
            await until(lambda: statuses(any_ctx).get("succeeded") == 24, timeout=60)
            by_process = [sent_by(port), sent_by(port + 1)]
        finally:
            stop(process)
    assert process.returncode == 0
    arrived: dict[int, list[str]] = {}
    for r in rx.received:
        body = r.body.decode()
        arrived.setdefault(int(body.split('"result": ')[1].split(",")[0]), []).append(body)
    assert arrived == expected  # each result's events once each, in the order they happened
    assert all(n is not None and n >= 1 for n in by_process), by_process  # both processes sent


class SlowInbox:
    """An SMTP server that takes its time, so two mailers would surely overlap."""

    def __init__(self) -> None:
        self.subjects: list[str] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        await asyncio.sleep(0.3)
        self.subjects.append(str(message_from_bytes(envelope.content)["Subject"]))  # type: ignore[attr-defined]
        return "250 OK"


async def test_only_the_first_process_mails(sqlite_ctx: AppContext) -> None:
    ctx = sqlite_ctx
    port = pg.free_ports(2)
    inbox = SlowInbox()
    with smtp_server(inbox) as smtp_port:
        process = start_two(
            ctx,
            port,
            QHOOK_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
            QHOOK_ERROR_MAIL_INTERVAL="3600",
        )
        try:
            await until(lambda: both_up(port), timeout=30)
            endpoints = [f"https://erp{n}.example.com:443" for n in range(3)]
            for endpoint in endpoints:
                report(ctx, endpoint, f"{endpoint} failed")
            await until(lambda: len(inbox.subjects) >= 3, timeout=20)
            await asyncio.sleep(2.0)  # a second mailer would have sent its copies by now
        finally:
            stop(process)
    assert process.returncode == 0
    # One digest per endpoint: two mailers on SQLite read the same unsent rows and both sent them.
    assert sorted(s.split(": ")[1] for s in inbox.subjects) == endpoints
