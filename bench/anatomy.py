"""Where a delivery's CPU goes in the throughput scenario (a diagnosis, not a target).

The throughput scenario measures requests per second; this one measures, per delivery and side by
side in alternating runs, the CPU time of the worker's event-loop thread (everything it sends and
decides) and of its other threads (the claims and outcome writes), against:

- ``bare``: the bare aiohttp client, the same bodies, the same concurrency (its only thread);
- ``no_http``: the real worker with a sender that answers 200 at once, so the loop's figure is
  qhook's own work per delivery (claim results, sign, decide, record) without aiohttp.

The worker's loop thread is what bounds qhook's rate. Its time per delivery less the no-HTTP
loop's is what aiohttp costs inside the worker; set beside the bare client's, the difference is
what the other threads cost it (the GIL changes hands at every database call).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from bench import env
from bench.baseline import bare_aiohttp, run_loop
from bench.harness import alternate, control, receiver, write
from bench.report import Row, say
from bench.throughput import CONCURRENCY, drain
from qhook.context import AppContext
from qhook.delivery.sender import OutgoingRequest, SendOutcome

TICKS = os.sysconf("SC_CLK_TCK")
_runs = itertools.count()


class AnswerAtOnce:
    """A sender that answers 200 without any I/O: what is left is qhook's own work."""

    async def send(self, request: OutgoingRequest) -> SendOutcome:
        return SendOutcome(
            status_code=200,
            response_headers={"Content-Type": "text/plain", "Content-Length": "2"},
            response_body="ok",
            duration_ms=0,
            error_kind=None,
            error=None,
            retry_after_s=None,
        )

    async def close(self) -> None:
        return None


def cpu_s() -> tuple[float, float]:
    """(this thread, the whole process) CPU seconds, user + system. The process's figure counts
    threads that ended meanwhile too (the worker's database threads end with it)."""
    with open(f"/proc/self/task/{threading.get_native_id()}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    times = os.times()
    return (int(fields[11]) + int(fields[12])) / TICKS, times.user + times.system


def _per_delivery(before: tuple[float, float], total: int) -> tuple[float, float]:
    """(loop thread, every other thread) in µs per delivery since ``before``; the loop runs in
    the thread that measures (``run_loop``)."""
    after = cpu_s()
    loop_s = after[0] - before[0]
    return loop_s / total * 1e6, max(after[1] - before[1] - loop_s, 0.0) / total * 1e6


def _worker_run(ctx: AppContext, base: str, hook: env.Hook, total: int, http: bool) -> tuple[float, float]:
    env.empty_queue(ctx)
    env.bulk_insert(ctx, env.delivery_rows(hook, total, prefix=f"msg_a{next(_runs)}_"))
    control(base, "reset")
    before = cpu_s()
    # Without HTTP the receiver gets nothing: the database's count alone says when it is over.
    sender, done = (None, env.delivered(ctx, [base], total)) if http else (AnswerAtOnce(), None)
    run_loop(drain(ctx, total, timeout=max(60.0, total / 100), sender=sender, done=done))
    figures = _per_delivery(before, total)
    delivered = env.count_status(ctx, "succeeded")
    if delivered != total:  # per delivery of what was not delivered: no figure
        raise RuntimeError(f"anatomy: {delivered} of {total} deliveries succeeded before the timeout")
    return figures


def _bare_run(base: str, bodies: list[bytes]) -> tuple[float, float]:
    before = cpu_s()
    bare_aiohttp(base + "/hook", bodies, CONCURRENCY)
    return _per_delivery(before, len(bodies))


def run(kinds: list[str], runs: int, quick: bool) -> list[Row]:
    total = 2_000 if quick else 20_000
    rows: list[Row] = []
    out: dict[str, Any] = {"deliveries": total, "concurrency": CONCURRENCY, "by_db": {}}
    for kind in kinds:
        started = time.perf_counter()
        loops, others = _on(kind, runs, total)
        say(f"anatomy {kind} took {time.perf_counter() - started:.0f} s")
        load = env.load()
        for name, label in (("qhook", "qhook"), ("no_http", "qhook, no HTTP"), ("bare", "bare aiohttp")):
            rows.append(Row("anatomy", kind, f"{label}: loop thread", "µs/delivery", loops[name], load=load))
            rows.append(
                Row("anatomy", kind, f"{label}: other threads", "µs/delivery", others[name], load=load)
            )
        ratio = [q / b for q, b in zip(loops["qhook"], loops["bare"], strict=True)]
        rows.append(Row("anatomy", kind, "qhook loop / bare loop", "ratio", ratio, load=load))
        out["by_db"][kind] = {"loop_us": loops, "other_threads_us": others}
    out["rows"] = [r.as_dict() for r in rows]
    write("anatomy", out)
    return rows


def _on(kind: str, runs: int, total: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Loop-thread and other-thread µs per delivery of each contender, ``runs`` alternating rounds."""
    others: dict[str, list[float]] = {"qhook": [], "no_http": [], "bare": []}
    with env.database(kind) as db, receiver() as base:
        ctx = env.context(db)
        hook = env.make_hook(ctx, base + "/hook")
        bodies = [r["body"].encode() for r in env.delivery_rows(hook, total)]

        def measured(name: str, go: Callable[[], tuple[float, float]]) -> Callable[[], float]:
            def one() -> float:
                loop_us, other_us = go()
                others[name].append(other_us)
                say(f"anatomy {kind} {name}: loop thread {loop_us:.0f} µs, other threads {other_us:.0f} µs")
                return loop_us

            return one

        loops = alternate(
            runs,
            {
                "qhook": measured("qhook", lambda: _worker_run(ctx, base, hook, total, True)),
                "no_http": measured("no_http", lambda: _worker_run(ctx, base, hook, total, False)),
                "bare": measured("bare", lambda: _bare_run(base, bodies)),
            },
        )
        ctx.db.dispose()
    return loops, others
