"""A large backlog (after an ERP outage): how long one claim takes, and how fast a worker drains it.

    .venv/bin/python -m bench.backlog [--db sqlite|postgres|both] [--rows 200000] [--seconds 20]

Builds ``--rows`` pending first-attempt deliveries (plus a few thousand retrying and succeeded
rows, as a real queue has), runs ANALYZE, then prints the EXPLAIN ANALYZE of the worker's claim
(first and retry lanes, PostgreSQL) or its query plan (SQLite), the median time of a claim of 100
rows, of the /metrics queue-depth query, and finally the sends per second of one ``qhook worker``
against a fast receiver for ``--seconds``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import event, text

from bench import env
from bench.harness import control, receiver
from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.store import queue
from qhook.store.db import Tx


def _captured(tx: Tx, run: Callable[[Tx], object]) -> tuple[str, Any]:
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.append((statement, parameters))

    event.listen(tx, "before_cursor_execute", capture)
    try:
        run(tx)
    finally:
        event.remove(tx, "before_cursor_execute", capture)
    return seen[0]


def _claim(lane: queue.Lane) -> Callable[[Tx], object]:
    def run(tx: Tx) -> object:
        now = utcnow()
        return queue.claim(
            tx, owner="bench", now=now, lease_until=now + timedelta(minutes=1), limit=100, lane=lane
        )

    return run


def _plan(ctx: AppContext, lane: queue.Lane) -> str:
    """The plan of one claim, executed (PostgreSQL: EXPLAIN ANALYZE) and rolled back."""
    with ctx.db.engine.connect() as tx, tx.begin() as outer:
        statement, parameters = _captured(tx, _claim(lane))
        if ctx.db.is_sqlite:
            rows = tx.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            plan = "\n".join(r[-1] for r in rows)
        else:
            rows = tx.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).all()
            plan = "\n".join(r[0] for r in rows)
        outer.rollback()
    return plan


def _timed(ctx: AppContext, run: Callable[[Tx], object], times: int = 7) -> float:
    """Median milliseconds of ``run`` in a transaction that is rolled back (the rows stay pending)."""
    spent: list[float] = []
    for _ in range(times):
        with ctx.db.engine.connect() as tx, tx.begin() as outer:
            started = time.perf_counter()
            run(tx)
            spent.append((time.perf_counter() - started) * 1000)
            outer.rollback()
    return statistics.median(spent)


def _on(kind: str, total: int, seconds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with env.database(kind) as db, receiver() as base:
        ctx = env.context(db)
        hook = env.make_hook(ctx, base + "/hook")
        started = time.perf_counter()
        env.bulk_insert(ctx, env.delivery_rows(hook, total), chunk=20_000)
        env.bulk_insert(ctx, env.delivery_rows(hook, 5000, start=total, prefix="old_", status="succeeded"))
        retrying = list(env.delivery_rows(hook, 5000, start=total + 5000, prefix="ret_", status="retrying"))
        for row in retrying:
            row["attempt_count"] = 2
        env.bulk_insert(ctx, retrying)
        with ctx.db.transaction() as tx:
            tx.execute(text("ANALYZE"))
        print(f"backlog {kind}: {total:,} pending rows in {time.perf_counter() - started:.0f} s")
        for lane in ("first", "retry"):
            print(f"backlog {kind}: claim plan, {lane} lane\n{_plan(ctx, lane)}")
        out["claim_first_ms"] = round(_timed(ctx, _claim("first")), 1)
        out["claim_retry_ms"] = round(_timed(ctx, _claim("retry")), 1)
        out["depth_ms"] = round(_timed(ctx, queue.depth_by_status, times=3), 1)
        control(base, "reset")
        worker = env.start_qhook(db, "worker")
        try:
            time.sleep(seconds)
            sent = int(control(base, "stats")["unique"])
        finally:
            env.stop_process(worker)
        out["sends_per_s"] = round(sent / seconds, 1)
        out["load"] = env.load()
        ctx.db.dispose()
    print(f"backlog {kind}: {out}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.backlog")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    found = {kind: _on(kind, args.rows, args.seconds) for kind in kinds}
    for kind, figures in found.items():
        print(f"{kind}: {figures}")


if __name__ == "__main__":
    main()
