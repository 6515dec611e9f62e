"""Scenario 4: N results through storeResults in calls of 1,000 on a set with 10 active workflows,
half of them firing on every result; results per second, and every delivery row counted."""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import func, select

from bench import env
from bench.harness import write
from bench.report import Row, say
from qhook.domain.access import Principal
from qhook.services import compat, workflows
from qhook.services import sets as sets_service
from qhook.store.tables import deliveries, events, results

CALL = 1_000
WORKFLOWS = 10
FIELDS = [
    {"name": "batchnumber_", "type": "text", "required": True},
    {"name": "status_", "type": "list", "options": ["draft", "released", "blocked"]},
    {"name": "ph_", "type": "number"},
    {"name": "operator_", "type": "text"},
    {"name": "expiry_", "type": "date"},
    {"name": "note_", "type": "text"},
]


def one_run(kind: str, total: int, number: int) -> tuple[float, dict[str, Any]]:
    with env.database(kind) as db:
        ctx = env.context(db)
        found = sets_service.create_set(ctx.db, name="Batch release", fields=FIELDS, actor="bench")
        for n in range(WORKFLOWS):
            firing = n % 2 == 0
            workflows.create_workflow(
                ctx,
                {
                    "name": f"Workflow {n}",
                    "set_id": found.id,
                    "triggers": {"entry": True},
                    # Half fire on every released batch; the other half look and decline.
                    "filter": {"field": "status_", "op": "eq", "value": "released" if firing else "blocked"},
                    "signals": [
                        {
                            "type": "webhook",
                            "url": f"http://127.0.0.1:9/erp{n}",
                            "subject": "Batch {{ batchnumber_ }}",
                        }
                    ],
                },
                actor="bench",
            )
        principal = Principal(user_id=1, name="bench", role="admin")
        calls = [
            [
                {
                    "batchnumber_": f"B-{c * CALL + i:07d}",
                    "status_": "released",
                    "ph_": 6.8,
                    "operator_": "Anna de Vries",
                    "expiry_": "2026-10-02",
                    "note_": "Within specification",
                }
                for i in range(CALL)
            ]
            for c in range(total // CALL)
        ]
        spy = env.spy(os.getpid(), f"ingest-{kind}", 30) if number == 0 else None
        load = env.load()
        start = time.perf_counter()
        cpu_start = time.process_time()
        stored = 0
        for items in calls:
            stored += len(compat.store_results(ctx, principal, found.id, items))
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        if spy is not None:
            env.spy_stop(spy)
        with ctx.db.reading() as tx:
            written = int(tx.execute(select(func.count()).select_from(deliveries)).scalar_one())
            result_rows = int(tx.execute(select(func.count()).select_from(results)).scalar_one())
            event_rows = int(tx.execute(select(func.count()).select_from(events)).scalar_one())
        ctx.db.dispose()
    expected = total * WORKFLOWS // 2
    book = {
        "results_published": total,
        "results_stored": result_rows,
        "events": event_rows,
        "deliveries_expected": expected,
        "deliveries_written": written,
        "missing": expected - written,
        "void": written != expected or result_rows != total or stored != total,
        # The machine is shared: results per CPU-second of this process is the steadier figure.
        "results_per_cpu_s": round(total / cpu_seconds),
        "load": load,
    }
    return total / seconds, book


def run(kinds: list[str], runs: int, quick: bool) -> list[Row]:
    total = 4_000 if quick else 20_000
    rows: list[Row] = []
    out: dict[str, Any] = {"results": total, "per_call": CALL, "workflows": WORKFLOWS, "by_db": {}}
    for kind in kinds:
        rates: list[float] = []
        books: list[dict[str, Any]] = []
        for number in range(runs):
            rate, book = one_run(kind, total, number)
            books.append(book)
            say(f"ingest {kind} run {number}: {rate:,.0f} results/s ledger {book}")
            if not book["void"]:
                rates.append(rate)
        load = env.load_range([b["load"] for b in books])
        target = ">= 3,000" if kind == "sqlite" else ""
        row = Row(
            "ingest", kind, "storeResults x1000, 5/10 firing", "results/s", rates, target=target, load=load
        )
        row.met = (bool(rates) and row.median >= 3000) if kind == "sqlite" else None
        per_cpu = sorted(b["results_per_cpu_s"] for b in books)
        row.note = (
            f"deliveries written {books[-1]['deliveries_written']:,} of {books[-1]['deliveries_expected']:,};"
            f" {per_cpu[len(per_cpu) // 2]:,} results per CPU-second (median)"
        )
        rows.append(row)
        if env.PROFILE:
            for frame, own, incl in env.spy_summary(f"ingest-{kind}"):
                say(f"  profile self {own:6.1%} incl {incl:6.1%}  {frame}")
        out["by_db"][kind] = {"rates": rates, "ledgers": books}
    out["rows"] = [r.as_dict() for r in rows]
    write("ingest", out)
    return rows
