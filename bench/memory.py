"""Scenario 6: a ``qhook worker`` process facing N pending deliveries (1,000,000 by default) sends to
a fast receiver for a while; its peak resident memory (VmHWM from /proc) must stay under 200 MB."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import env
from bench.harness import control, receiver, write
from bench.report import Row, say

LIMIT_MB = 200


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run(kinds: list[str], runs: int, quick: bool, rows: int | None = None) -> list[Row]:
    total = rows or (100_000 if quick else 1_000_000)
    seconds = 10 if quick else 30
    out: dict[str, Any] = {"pending": total, "seconds_per_run": seconds, "by_db": {}}
    found: list[Row] = []
    for kind in kinds:
        found += _on(kind, runs, total, seconds, out)
    out["rows"] = [r.as_dict() for r in found]
    write("memory", out)
    return found


def _on(kind: str, runs: int, total: int, seconds: int, out: dict[str, Any]) -> list[Row]:
    peaks: list[float] = []
    books: list[dict[str, Any]] = []
    loads: list[str] = []
    with env.database(kind) as db, receiver() as base:
        ctx = env.context(db)
        hook = env.make_hook(ctx, base + "/hook")
        started = time.perf_counter()
        env.bulk_insert(ctx, env.delivery_rows(hook, total), chunk=20_000)
        say(f"memory {kind}: {total:,} pending rows inserted in {time.perf_counter() - started:.0f} s")
        for number in range(runs):
            control(base, "reset")
            loads.append(env.load())
            pending_before = env.count_status(ctx, "pending")
            worker = env.start_qhook(db, "worker")
            samples: list[int] = []
            try:
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline and worker.poll() is None:
                    samples.append(status_kb(worker.pid, "VmRSS"))
                    time.sleep(0.2)
                peak_kb = status_kb(worker.pid, "VmHWM")
            finally:
                env.stop_process(worker)
            published = env.webhook_ids(ctx)
            cut = [w for w, s in published.items() if s != "succeeded"]
            book = env.ledger(published, control(base, "ledger"), cut)
            # Sent in earlier runs of this database: delivered then, not now.
            book["delivered_in_earlier_runs"] = total - pending_before
            book["missing"] -= total - pending_before
            book["void"] = book["missing"] > 0 or book["unknown"] > 0 or worker.returncode not in (0, None)
            book["pending_at_start"] = pending_before
            book["rss_last_mb"] = round(samples[-1] / 1024, 1) if samples else None
            books.append(book)
            say(f"memory {kind} run {number}: peak {peak_kb / 1024:.0f} MB ledger {book} load {loads[-1]}")
            if not book["void"]:
                peaks.append(peak_kb / 1024)
        ctx.db.dispose()
    load = env.load_range(loads)
    row = Row(
        "memory", kind, f"worker peak RSS, {total:,} pending", "MB", peaks, target=f"< {LIMIT_MB}", load=load
    )
    row.met = bool(peaks) and max(peaks) < LIMIT_MB
    out["by_db"][kind] = {"peak_mb": peaks, "ledgers": books, "loads": loads}
    return [row]
