"""Scenario 1: N pending deliveries to one fast receiver; qhook's full path against the bare aiohttp
client (the limit) and the classic 2 x 10 requests pool, alternating A, B, C in each round."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import os
import time
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tests.support.pg import free_ports

from bench import env
from bench.baseline import bare_aiohttp, classic_pool, run_loop
from bench.harness import alternate, control, receiver, write
from bench.report import Row, say
from qhook.context import AppContext
from qhook.delivery.sender import Sender
from qhook.delivery.worker import Worker

CONCURRENCY = 10  # qhook's default max_in_flight per endpoint; the bare client gets the same
_runs = itertools.count()
_profiled: dict[str, bool] = {}
# Where a worker's time could go, for the profile summary (inclusive shares of GIL samples).
NEEDLES = (
    "Worker._claim",
    "Worker._pump",
    "attempt.py",
    "prepare.py",
    "build_request",
    "signing.py",
    "Sender.send",
    "client_reqrep",
    "Recorder",
    "recorder.py",
    "queue.py",
    "Worker._conclude",
    "metrics",
    "drain",
)


async def drain(
    ctx: AppContext,
    total: int,
    timeout: float,
    sender: Any = None,
    done: Callable[[], bool] | None = None,
    **worker_args: Any,
) -> float:
    """Run the real Worker until ``total`` deliveries succeeded (or ``timeout``); seconds taken.
    ``sender``: another than the real one (bench/anatomy's that answers at once); ``done``: the
    check that they did (``env.delivered``; by default the database's count alone)."""
    check = done if done is not None else lambda: env.count_status(ctx, "succeeded") >= total
    sender = sender if sender is not None else Sender(ctx.settings)
    worker = Worker(ctx, sender, **worker_args)
    stop = asyncio.Event()
    start = time.perf_counter()
    task = asyncio.create_task(worker.run(stop))
    deadline = start + timeout
    try:
        while time.perf_counter() < deadline:
            if await asyncio.to_thread(check):
                break
            await asyncio.sleep(0.05)  # the check runs in this process: rarely
        return time.perf_counter() - start
    finally:
        stop.set()
        await task
        await sender.close()


def qhook_run(ctx: AppContext, base: str, hook: env.Hook, total: int) -> tuple[float, dict[str, Any]]:
    """Fresh queue of ``total`` rows, drained by the worker; (requests/s, ledger)."""
    env.empty_queue(ctx)
    prefix = f"msg_r{next(_runs)}_"
    env.bulk_insert(ctx, env.delivery_rows(hook, total, prefix=prefix))
    control(base, "reset")
    name = f"throughput-{ctx.db.dialect}"
    spy = env.spy(os.getpid(), name, 600) if not _profiled.get(name) else None
    done = env.delivered(ctx, [base], total)
    seconds = run_loop(drain(ctx, total, timeout=max(60.0, total / 100), done=done))
    if spy is not None:
        env.spy_stop(spy)
        _profiled[name] = True
        for frame, own, incl in env.spy_summary(name):
            say(f"  profile self {own:6.1%} incl {incl:6.1%}  {frame}")
        say(f"  profile inclusive: {env.inclusive_summary(name, NEEDLES)}")
    return env.count_status(ctx, "succeeded") / seconds, _book(ctx, base)


# `qhook worker --processes` as one would run it here, a core each; at most CONCURRENCY, so the
# split of max_in_flight (at least 1 a process) keeps the bare client's 10 in flight.
PROCESSES = min(os.cpu_count() or 1, CONCURRENCY)
DUE_AFTER_S = 20.0  # a processes run's rows come due this long after the command answers (COPY: 4-8 s)


def processes_run(
    db: env.Db, ctx: AppContext, base: str, hook: env.Hook, total: int, *, affinity: bool = False
) -> tuple[float, dict[str, Any]]:
    """The same queue drained by the real ``qhook worker --processes PROCESSES`` command (its
    processes split the endpoint's max_in_flight of 10, so the receiver sees the bare client's
    concurrency), with ``affinity`` each bound to a CPU (``--cpu-affinity``); (requests/s,
    ledger). Timed from when the rows come due, with every process started and idle: start-up is
    not counted."""
    env.empty_queue(ctx)
    rows = list(env.delivery_rows(hook, total, prefix=f"msg_p{next(_runs)}_"))
    control(base, "reset")
    port = free_ports(PROCESSES)
    args = ["worker", "--processes", str(PROCESSES), "--metrics-port", str(port)]
    process = env.start_qhook(db, *args, *(["--cpu-affinity"] if affinity else []))
    try:
        if not env.wait_for(lambda: all(_answers(port + i) for i in range(PROCESSES)), timeout=60):
            raise RuntimeError(f"qhook worker --processes {PROCESSES} did not start within 60 s")
        # The rows are written now, due a little later, as events write them: inserted once and
        # never updated before their claim. (Inserted before the start and then all made due by one
        # UPDATE, each row had a dead version beside it, and the claim's update found its page full.)
        due = env.utc_now() + timedelta(seconds=DUE_AFTER_S)
        env.bulk_insert(ctx, ({**row, "next_attempt_at": due} for row in rows))
        # Written a poll interval (2 s) and a half before they come due: by then each process has
        # looked again, and waits for exactly that moment.
        if env.utc_now() > due - timedelta(seconds=2.5):
            raise RuntimeError(f"writing {total} rows took over {DUE_AFTER_S - 2.5} s: the start is void")
        env.wait_for(lambda: env.utc_now() >= due, timeout=30, interval=0.001)
        start = time.perf_counter()
        env.wait_for(env.delivered(ctx, [base], total), timeout=max(60.0, total / 100), interval=0.02)
        seconds = time.perf_counter() - start
    finally:
        env.stop_process(process, timeout=60)
    if process.returncode != 0:
        errors = process.stderr.read().decode() if process.stderr else ""
        raise RuntimeError(f"qhook worker --processes {PROCESSES} ended with {process.returncode}: {errors}")
    return env.count_status(ctx, "succeeded") / seconds, _book(ctx, base)


def _book(ctx: AppContext, base: str) -> dict[str, Any]:
    """The ledger of a worker run: still queued rows are cut off, and what the receiver got twice
    is counted (none while the leases hold)."""
    published = env.webhook_ids(ctx)
    cut_off = [w for w, s in published.items() if s != "succeeded"]
    book = env.ledger(published, control(base, "ledger"), cut_off)
    book["duplicates"] = control(base, "stats")["duplicates"]
    return book


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):
        return False


def baseline_run(base: str, bodies: list[bytes], which: str) -> tuple[float, dict[str, Any]]:
    control(base, "reset")
    if which == "bare":
        seconds = bare_aiohttp(base + "/hook", bodies, CONCURRENCY)
        prefix = "bare_"
    else:
        seconds = classic_pool(base + "/hook", bodies)
        prefix = "pool_"
    published = [f"{prefix}{i}" for i in range(len(bodies))]
    book = env.ledger(published, control(base, "ledger"))
    return len(bodies) / seconds, book


def run(kinds: list[str], runs: int, quick: bool) -> list[Row]:
    total = 2_000 if quick else 20_000
    rows: list[Row] = []
    out: dict[str, Any] = {"deliveries": total, "concurrency": CONCURRENCY, "by_db": {}}
    for kind in kinds:
        rows += _on(kind, runs, total, out)
    out["rows"] = [r.as_dict() for r in rows]
    write("throughput", out)
    return rows


def _on(kind: str, runs: int, total: int, out: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    with env.database(kind) as db, receiver() as base:
        ctx = env.context(db)
        hook = env.make_hook(ctx, base + "/hook")
        bodies = [r["body"].encode() for r in env.delivery_rows(hook, total)]
        books: dict[str, list[dict[str, Any]]] = {
            name: [] for name in ("qhook", "processes", "bound", "bare", "pool")
        }
        loads: list[str] = []

        def contender(name: str) -> Any:
            def go() -> float:
                loads.append(env.load())
                if name == "qhook":
                    rate, book = qhook_run(ctx, base, hook, total)
                elif name in ("processes", "bound"):
                    rate, book = processes_run(db, ctx, base, hook, total, affinity=name == "bound")
                else:
                    rate, book = baseline_run(base, bodies, name)
                books[name].append(book)
                say(f"throughput {kind} {name}: {rate:,.0f}/s ledger {book} load {loads[-1]}")
                return float("nan") if book["void"] else rate

            return go

        several = ("processes", "bound") if PROCESSES > 1 else ()
        names = ("qhook", *several, "bare", "pool")
        results = alternate(runs, {name: contender(name) for name in names})
        ctx.db.dispose()
    valid = {k: [v for v in vs if v == v] for k, vs in results.items()}
    load = env.load_range(loads)
    rows += [
        Row("throughput", kind, "qhook, one process", "req/s", valid["qhook"], load=load),
        Row("throughput", kind, "bare aiohttp", "req/s", valid["bare"], load=load),
        Row("throughput", kind, "classic pool 2x10", "req/s", valid["pool"], load=load),
    ]
    contenders = [("qhook", "qhook, one process")]
    if "processes" in results:
        for name, label in (
            ("processes", f"qhook worker --processes {PROCESSES}"),
            ("bound", f"qhook worker --processes {PROCESSES} --cpu-affinity"),
        ):
            rows.insert(-2, Row("throughput", kind, label, "req/s", valid[name], load=load))
            contenders.append((name, label))
    for name, label in contenders:
        to_bare = _ratios(results[name], results["bare"])
        rows.append(Row("throughput", kind, f"{label} / bare", "ratio", to_bare, target=">= 0.5", load=load))
        rows[-1].met = bool(to_bare) and rows[-1].median >= 0.5
        to_pool = _ratios(results[name], results["pool"])
        rows.append(
            Row("throughput", kind, f"{label} / classic pool", "ratio", to_pool, target="> 1", load=load)
        )
        rows[-1].met = bool(to_pool) and rows[-1].median > 1
    out["by_db"][kind] = {"rates": results, "ledgers": books, "loads": loads}
    return rows


def _ratios(these: list[float], those: list[float]) -> list[float]:
    """Ratios of the runs of one round each (void runs, NaN, left out)."""
    return [a / b for a, b in zip(these, those, strict=True) if a == a and b == b]
