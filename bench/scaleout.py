"""Scenario 7 (PostgreSQL): 1, 2 and 4 ``qhook worker`` processes share one queue against a receiver
answering after 20 ms; throughput per worker count, rounds alternating 1, 2, 4.

The figure is the receiver's steady rate (unique deliveries / first-to-last arrival), so process
start-up is not counted; the wall rate (start of the processes to the last row marked succeeded)
is in the JSON too. Signals keep the default max_in_flight of 10 per endpoint per worker."""

from __future__ import annotations

import itertools
import time
from typing import Any

from bench import env
from bench.harness import alternate, control, receiver, write
from bench.report import Row, say

COUNTS = (1, 2, 4)
DELAY_MS = 20
_runs = itertools.count()


def run(kinds: list[str], runs: int, quick: bool) -> list[Row]:
    total = 1_500 if quick else 10_000
    out: dict[str, Any] = {"deliveries": total, "receiver_delay_ms": DELAY_MS, "by_db": {}}
    found: list[Row] = []
    if "postgres" not in kinds:
        say("scaleout runs on PostgreSQL only (SQLite serves one worker)")
        return found
    books: dict[int, list[dict[str, Any]]] = {k: [] for k in COUNTS}
    walls: dict[int, list[float]] = {k: [] for k in COUNTS}
    loads: list[str] = []
    with env.database("postgres") as db, receiver(delay_ms=DELAY_MS) as base:
        ctx = env.context(db)
        hook = env.make_hook(ctx, base + "/hook")

        def contender(workers: int) -> Any:
            def go() -> float:
                env.empty_queue(ctx)
                env.bulk_insert(ctx, env.delivery_rows(hook, total, prefix=f"msg_s{next(_runs)}_"))
                control(base, "reset")
                loads.append(env.load())
                started = time.perf_counter()
                processes = [env.start_qhook(db, "worker") for _ in range(workers)]
                try:
                    env.wait_for(env.delivered(ctx, [base], total), timeout=300, interval=0.1)
                    wall = time.perf_counter() - started
                finally:
                    for process in processes:
                        env.stop_process(process)
                published = env.webhook_ids(ctx)
                cut = [w for w, s in published.items() if s != "succeeded"]
                book = env.ledger(published, control(base, "ledger"), cut)
                stats = control(base, "stats")
                book["duplicates"] = stats["duplicates"]
                book["void"] = book["void"] or bool(cut)
                books[workers].append(book)
                steady = stats["unique"] / max(stats["last"] - stats["first"], 1e-6)
                walls[workers].append(total / wall)
                say(
                    f"scaleout {workers} worker(s): {steady:,.0f}/s steady, {total / wall:,.0f}/s wall, "
                    f"ledger {book} load {loads[-1]}"
                )
                return float("nan") if book["void"] else steady

            return go

        results = alternate(runs, {str(k): contender(k) for k in COUNTS})
        ctx.db.dispose()
    load = env.load_range(loads)
    base_rates = results["1"]
    for k in COUNTS:
        values = [v for v in results[str(k)] if v == v]
        found.append(
            Row("scaleout", "postgres", f"{k} worker(s), 20 ms receiver", "req/s", values, load=load)
        )
        if k > 1:
            ratio = [a / b for a, b in zip(results[str(k)], base_rates, strict=True) if a == a and b == b]
            found.append(Row("scaleout", "postgres", f"{k} workers / 1 worker", "ratio", ratio, load=load))
    out["by_db"]["postgres"] = {"steady": results, "wall": walls, "ledgers": books, "loads": loads}
    out["rows"] = [r.as_dict() for r in found]
    curve = "  ".join(
        f"{k}: {Row('', '', '', '', [v for v in results[str(k)] if v == v]).median:,.0f}/s" for k in COUNTS
    )
    say(f"scale-out curve (median steady req/s): {curve}")
    write("scaleout", out)
    return found
