"""The other delivery processes of one ``qhook worker --processes N``.

One process sends at most ~2,000-5,000 deliveries a second on the 2-core development machine
(depending on its load), whatever the number of cores: it is bound by its own CPU time per
delivery (bench/throughput). With N processes each runs a whole worker (claims, sends, records)
on the shared queue, as several ``qhook worker`` commands would on PostgreSQL, and SQLite gets
them too: they share the command's SQLite worker lock, and SQLite's write lock (every transaction
here begins IMMEDIATE) keeps their claims apart.

The command's own process is the first (``worker.Share``); it starts the others with the spawn
method, starts one again when it ends (after 1 s, doubling to a minute while it keeps ending),
and stops them with itself. A process whose command is gone (killed) stops too.

With CPU affinity (``--cpu-affinity``, QHOOK_WORKER_CPU_AFFINITY) process i is bound to the i-th
CPU the command may use. Unbound, the scheduler moved the processes between the cores they share
with the database and the receivers, and two processes delivered 5-18 % less (bench/throughput,
medians of two runs on SQLite and three on PostgreSQL; a lone client gains nothing from it).
``qhook serve``'s own process, which also answers the API, is never bound; its other delivery
processes are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from qhook import logline, metrics
from qhook.context import open_context
from qhook.delivery import worker as worker_mod
from qhook.domain import restarts
from qhook.errors import QhookError
from qhook.settings import Settings

logger = logging.getLogger(__name__)

WATCH_EVERY_S = 1.0
# Stopping: each process lets its sends in flight finish (``worker.SHUTDOWN_GRACE_S``) and writes
# what it has; one still there after this is killed (its leases run out, nothing is lost).
STOP_WAIT_S = worker_mod.SHUTDOWN_GRACE_S + 20.0


def metrics_ports_past_the_last(port: int | None, processes: int) -> str | None:
    """Why process i cannot serve its metrics on ``port`` + i (the range ends past 65535), or None."""
    if port is None or port + processes - 1 <= 65535:
        return None
    return f"Cannot serve metrics on ports {port} to {port + processes - 1}: the last port is 65535"


def cpu_of(index: int, cpus: Sequence[int]) -> int:
    """The CPU process ``index`` is bound to: the command's CPUs in order, in turn."""
    return cpus[index % len(cpus)]


def allowed_cpus() -> tuple[int, ...]:
    """The CPUs this process may run on, in order (its affinity mask, within its cgroup's cpuset),
    read before any process is bound: a process spawned later inherits its parent's one CPU."""
    if not hasattr(os, "sched_getaffinity"):
        raise QhookError(
            "CPU affinity (--cpu-affinity, QHOOK_WORKER_CPU_AFFINITY) needs Linux's sched_setaffinity,"
            " which this platform lacks: run without it"
        )
    return tuple(sorted(os.sched_getaffinity(0)))


def bind(index: int, cpus: Sequence[int]) -> None:
    """Bind this process, process ``index`` of the command, to its CPU (``cpu_of``); one that cannot
    be (the CPU left the cgroup's cpuset since) runs unbound, and the log says why."""
    cpu = cpu_of(index, cpus)
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        logger.error(
            "delivery process %d could not be bound to CPU %d: %s; it runs on any CPU",
            index,
            cpu,
            exc.strerror or exc,
            extra={"action": "worker_cpu_unbound", "worker_process": index, "cpu": cpu},
        )
        return
    logger.info(
        "delivery process %d bound to CPU %d",
        index,
        cpu,
        extra={"action": "worker_cpu_bound", "worker_process": index, "cpu": cpu},
    )


@dataclass(frozen=True, slots=True)
class Options:
    """What every process of the command runs with."""

    settings: Settings
    processes: int
    concurrency: int | None
    metrics_port: int | None  # the first process's; process i serves on metrics_port + i
    metrics_host: str
    # With CPU affinity: the command's CPUs (``allowed_cpus``), process i bound to ``cpu_of(i)``;
    # empty: every process runs on any CPU.
    cpus: tuple[int, ...] = ()


@dataclass
class _Member:
    index: int
    process: BaseProcess
    started: float
    ends: int = 0  # in a row (``restarts.in_a_row``)
    restart_at: float | None = None


class Fleet:
    """Processes 1 to N-1 of the command, started, watched and stopped by process 0."""

    def __init__(self, options: Options) -> None:
        self._options = options
        self._context = multiprocessing.get_context("spawn")
        self._members: list[_Member] = []

    def start(self) -> None:
        now = time.monotonic()
        self._members = [_Member(i, self._spawn(i), now) for i in range(1, self._options.processes)]

    def _spawn(self, index: int) -> BaseProcess:
        process = self._context.Process(
            target=run_member,
            args=(self._options, index),
            name=f"qhook-worker-{index}",
            daemon=False,  # it has a worker to stop cleanly, which a daemon process may not wait for
        )
        process.start()
        return process

    def watch(self, now: float) -> None:
        """Start again the processes that ended, each after its pause."""
        for member in self._members:
            if member.restart_at is not None:
                if now >= member.restart_at:
                    try:
                        member.process = self._spawn(member.index)
                    except OSError as exc:  # no process could be made now (memory, process limit)
                        member.ends += 1
                        member.restart_at = now + restarts.pause_s(member.ends)
                        logger.error(
                            "delivery process %d could not be started: %s",
                            member.index,
                            exc,
                            extra={"action": "worker_process_failed", "worker_process": member.index},
                        )
                        continue
                    member.restart_at = None
                    member.started = now
                continue
            code = member.process.exitcode
            if code is None:
                continue
            member.ends = restarts.in_a_row(member.ends, now - member.started)
            pause = restarts.pause_s(member.ends)
            member.restart_at = now + pause
            logger.error(
                "delivery process %d ended (exit status %s); starting it again in %g s",
                member.index,
                code,
                pause,
                extra={"action": "worker_process_ended", "worker_process": member.index, "exit": code},
            )

    async def watch_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_EVERY_S)
            if not stop.is_set():
                self.watch(time.monotonic())
        self.signal_stop()

    def signal_stop(self) -> None:
        """Ask every process to stop (SIGTERM: each finishes as ``qhook worker`` does)."""
        for member in self._members:
            if member.process.exitcode is None and member.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    member.process.terminate()

    def join(self, timeout_s: float = STOP_WAIT_S) -> None:
        """Wait for them all; kill what is left after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        for member in self._members:
            if member.process.pid is None:
                continue
            member.process.join(max(deadline - time.monotonic(), 0.0))
            if member.process.exitcode is None:
                logger.error(
                    "delivery process %d did not stop within %g s: killed (its leases run out)",
                    member.index,
                    timeout_s,
                    extra={"action": "worker_process_killed", "worker_process": member.index},
                )
                member.process.kill()
                member.process.join()


def run_member(options: Options, index: int) -> None:
    """Process ``index`` of the command (the spawn target): a worker until SIGTERM or SIGINT, or
    until process 0 is gone."""
    settings = options.settings
    logline.configure(settings.log_level)
    if options.cpus:
        bind(index, options.cpus)
    ctx = open_context(settings, migrate_sqlite=False)  # the first process migrated it
    stop_metrics: Callable[[], None] | None = None
    if options.metrics_port is not None:
        port = options.metrics_port + index
        try:
            stop_metrics = metrics.serve_http(ctx, port, options.metrics_host)
        except OSError as exc:
            logger.error(
                "delivery process %d serves no metrics: port %d: %s",
                index,
                port,
                exc.strerror or exc,
                extra={"action": "metrics_unavailable", "worker_process": index},
            )
    share = worker_mod.Share(index, options.processes)

    async def main(stop: asyncio.Event) -> None:
        parent = multiprocessing.parent_process()
        if parent is not None:
            loop = asyncio.get_running_loop()
            sentinel = parent.sentinel

            def orphaned() -> None:  # readable once process 0 has ended, however it ended
                loop.remove_reader(sentinel)
                logger.warning(
                    "the first process of this qhook worker is gone: stopping",
                    extra={"action": "worker_orphaned", "worker_process": index},
                )
                stop.set()

            loop.add_reader(sentinel, orphaned)
        await worker_mod.run_until_stopped(ctx, stop, concurrency=options.concurrency, share=share)

    try:
        worker_mod.run_until_signalled(main)
    finally:
        if stop_metrics is not None:
            stop_metrics()
        ctx.db.dispose()
