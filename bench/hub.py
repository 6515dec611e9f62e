"""Scenario 5: the Integration Hub's delivery log over N rows (1,000,000 by default): each filter and
the body search, first page and a page from the middle of the table; p95 latency of the service
call (``services.hub.list_deliveries``, 50 per page) and the query plan of each statement it sends.

On SQLite the body-search index is built after the fill by the same code the background indexer
runs (``services.hub_search``), leaving the newest ``TAIL`` rows unindexed as a live indexer a
second behind the writes would: a search scans those and reads the index for the rest."""

from __future__ import annotations

import functools
import json
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import event, text

from bench import env
from bench.harness import write
from bench.latency import percentile
from bench.report import Row, say
from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.domain import ids
from qhook.services import hub as hub_service
from qhook.services import hub_search
from qhook.store import hub as hub_store
from qhook.store import search_index

ORIGINS = [f"https://host{i}.example.com:443" for i in range(20)]
REPEATS = 20
TAIL = 2_000


def rows_for(total: int) -> Iterator[dict[str, Any]]:
    """Rows like a busy installation's log, with rare needles among common values."""
    start = utcnow() - timedelta(days=60)
    step = timedelta(days=60) / total
    for i in range(total):
        created = start + step * i
        rare = i % 2500
        origin = ORIGINS[5 if rare == 1 else i % 2]
        result = {
            "@id": i % 10_000,
            "date": created.strftime("%Y-%m-%d %H:%M:%S"),
            "batchnumber_": f"B-{i:07d}",
            "status_": "released",
            "ph_": 6.8,
            "operator_": "Anna de Vries",
            "note_": "Within specification; released for shipment.",
        }
        body = {
            "action": "new",
            "subject": f"Batch B-{i:07d} released",
            "message": "Released by lab.operator",
            "results": result,
            "set": {"id": 1 + i % 2, "name": "Batch release"},
            "workflow": {"id": i % 50, "name": "Released batches to ERP"},
            "event_id": f"evt_{i:026d}",
            "occurred_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        yield {
            "webhook_id": f"msg_{i:026d}",
            "event_id": i,
            "workflow_id": i % 50,
            "signal_id": i % 100,
            "set_id": 3 if rare == 0 else 1 + i % 2,
            "result_id": i % 10_000,
            "action": "date" if rare == 2 else ("new", "modified", "deleted")[i % 3],
            "url": origin + "/hook",
            "endpoint": origin,
            "body": json.dumps(body),
            "status": "failed" if i % 37 == 0 else ("pending" if i >= total - 20 else "succeeded"),
            "attempt_count": 1,
            "next_attempt_at": None,
            "ordered": False,
            "order_key": None,
            "is_test": False,
            "created_at": created,
            "updated_at": created,
            "next_trigger": "scheduled",
        }


def filters(total: int) -> dict[str, hub_service.Filters]:
    start = utcnow() - timedelta(days=60)
    window = (start + timedelta(days=30), start + timedelta(days=31))
    month = (start + timedelta(days=15), start + timedelta(days=45))
    return {
        "none": hub_service.Filters(),
        "status=failed": hub_service.Filters(status="failed"),
        "workflow_id": hub_service.Filters(workflow_id=7),
        "signal_id": hub_service.Filters(signal_id=42),
        "set_id (rare)": hub_service.Filters(set_id=3),
        "result_id": hub_service.Filters(result_id=123),
        "endpoint (rare)": hub_service.Filters(endpoint=ORIGINS[5]),
        "action=date (rare)": hub_service.Filters(action="date"),
        "since/until 1 day": hub_service.Filters(since=window[0], until=window[1]),
        "since/until 30 days": hub_service.Filters(since=month[0], until=month[1]),
        "since 30 days ago": hub_service.Filters(since=start + timedelta(days=30)),
        "q one batch": hub_service.Filters(q=f"B-{total // 2 + 7:07d}"),
        "q common": hub_service.Filters(q="Anna de Vries"),
        "q absent": hub_service.Filters(q="B-9999999"),
        "q one batch + 30 days": hub_service.Filters(
            q=f"B-{total // 2 + 7:07d}", since=month[0], until=month[1]
        ),
        "q common + status=failed": hub_service.Filters(q="Anna de Vries", status="failed"),
    }


def explain(ctx: AppContext, wanted: hub_service.Filters) -> str:
    """The plans of exactly the statements the Hub sends for the first page (one per statement)."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.append((statement, parameters))

    with ctx.db.reading() as tx:
        event.listen(tx, "before_cursor_execute", capture)
        try:
            hub_store.list_deliveries(tx, hub_service.to_store(wanted), limit=51)
        finally:
            event.remove(tx, "before_cursor_execute", capture)
        sqlite = tx.dialect.name == "sqlite"
        plans = []
        for statement, parameters in seen:
            prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            rows = tx.exec_driver_sql(prefix + statement, parameters).all()
            plans.append("\n".join(str(r[-1] if sqlite else r[0]) for r in rows))
    return "\n--\n".join(plans)


def _pages_used(ctx: AppContext) -> int:
    """Bytes the SQLite database uses (0 on PostgreSQL)."""
    if not ctx.db.is_sqlite:
        return 0
    with ctx.db.reading() as tx:
        pages = tx.exec_driver_sql("PRAGMA page_count").scalar_one()
        free = tx.exec_driver_sql("PRAGMA freelist_count").scalar_one()
        size = tx.exec_driver_sql("PRAGMA page_size").scalar_one()
    return int((pages - free) * size)


def build_search_index(ctx: AppContext, leave: int) -> int:
    """Index all but the newest ``leave`` rows, in the background indexer's batches (SQLite)."""
    if not ctx.db.is_sqlite:
        return 0
    with ctx.db.transaction() as tx:
        search_index.forget_statistics(tx)  # the fill's ANALYZE took them on the empty index
        stop_at = int(tx.execute(text("SELECT max(id) FROM deliveries")).scalar_one()) - leave
        upto = search_index.indexed_upto(tx)
    done = 0
    while upto < stop_at:
        started = time.perf_counter()
        with ctx.db.transaction() as tx:
            added = search_index.index_batch(tx, batch=min(hub_search.BATCH, stop_at - upto))
            upto = search_index.indexed_upto(tx)
        BATCH_MS.append((time.perf_counter() - started) * 1000)
        done += added
        if not added:
            break
    return done


BATCH_MS: list[float] = []  # how long each indexing transaction held SQLite's write lock


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def run(kinds: list[str], runs: int, quick: bool, rows: int | None = None) -> list[Row]:
    total = rows or (50_000 if quick else 1_000_000)
    out: dict[str, Any] = {"rows": total, "page": 50, "repeats_per_run": REPEATS * 2, "by_db": {}}
    found: list[Row] = []
    for kind in kinds:
        found += _on(kind, runs, total, out)
    out["rows_table"] = [r.as_dict() for r in found]
    write("hub", out)
    return found


def _on(kind: str, runs: int, total: int, out: dict[str, Any]) -> list[Row]:
    with env.database(kind) as db:
        ctx = env.context(db)
        started = time.perf_counter()
        env.bulk_insert(ctx, rows_for(total), chunk=20_000)
        with ctx.db.transaction() as tx:
            # What qhook's worker runs on SQLite (a full ANALYZE would also take statistics on the
            # empty search index, which slow its indexing: store/search_index.forget_statistics).
            tx.execute(text("ANALYZE deliveries" if ctx.db.is_sqlite else "ANALYZE"))
        fill_s = time.perf_counter() - started
        say(f"hub {kind}: {total:,} rows inserted and analysed in {fill_s:.0f} s")
        size_before = _pages_used(ctx)
        started, cpu = time.perf_counter(), time.process_time()
        indexed = build_search_index(ctx, leave=TAIL)
        index_s, index_cpu_s = time.perf_counter() - started, time.process_time() - cpu
        index_mb = (_pages_used(ctx) - size_before) / 1e6
        if indexed:
            say(
                f"hub {kind}: {indexed:,} bodies indexed in {index_s:.0f} s "
                f"({index_cpu_s / indexed * 1e6:.0f} us CPU each, {index_mb:.0f} MB; per batch of "
                f"{hub_search.BATCH} p50 {percentile(BATCH_MS, 50):.0f} ms, "
                f"p99 {percentile(BATCH_MS, 99):.0f} ms, max {max(BATCH_MS):.0f} ms), "
                f"{TAIL:,} newest left to the scan"
            )
        middle = ids.encode_cursor(total // 2)
        p95: dict[str, list[float]] = {name: [] for name in filters(total)}
        medians: dict[str, list[float]] = {name: [] for name in filters(total)}
        plans = {name: explain(ctx, wanted) for name, wanted in filters(total).items()}
        loads: list[str] = []
        for _ in range(runs):
            loads.append(env.load())
            for name, wanted in filters(total).items():
                times: list[float] = []
                for _ in range(REPEATS):
                    times.append(timed(functools.partial(hub_service.list_deliveries, ctx, wanted, limit=50)))
                    times.append(
                        timed(
                            functools.partial(
                                hub_service.list_deliveries, ctx, wanted, limit=50, cursor=middle
                            )
                        )
                    )
                p95[name].append(percentile(times, 95))
                medians[name].append(statistics.median(times))
        ctx.db.dispose()
    load = env.load_range(loads)
    found: list[Row] = []
    for name in p95:
        row = Row("hub", kind, f"list {name} p95", "ms", p95[name], target="<= 50", load=load)
        row.met = row.median <= 50
        found.append(row)
        say(f"plan {kind} {name}:\n    " + plans[name].replace("\n", "\n    "))
    out["by_db"][kind] = {
        "fill_seconds": round(fill_s, 1),
        "search_index": {
            "indexed": indexed,
            "seconds": round(index_s, 1),
            "cpu_us_per_row": round(index_cpu_s / indexed * 1e6, 1) if indexed else None,
            "unindexed_tail": TAIL if indexed else None,
            "megabytes": round(index_mb) if indexed else None,
            "batch_ms": {
                "p50": round(percentile(BATCH_MS, 50), 1),
                "p99": round(percentile(BATCH_MS, 99), 1),
                "max": round(max(BATCH_MS), 1),
            }
            if indexed
            else None,
        },
        "p95_ms": p95,
        "median_ms": medians,
        "plans": plans,
    }
    return found
