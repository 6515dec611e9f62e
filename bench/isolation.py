"""Scenario 3: ten endpoints, one accepting connections and never answering (timeout 15 s). The
nine healthy ones' throughput with the bad one present, against the same run without it."""

from __future__ import annotations

import asyncio
import itertools
from contextlib import ExitStack
from typing import Any

from bench import env
from bench.harness import alternate, control, receiver, write
from bench.report import Row, say
from bench.throughput import drain

HEALTHY = 9
_runs = itertools.count()


def run(kinds: list[str], runs: int, quick: bool) -> list[Row]:
    per_endpoint = 300 if quick else 2_000
    rows: list[Row] = []
    out: dict[str, Any] = {"per_endpoint": per_endpoint, "healthy_endpoints": HEALTHY, "by_db": {}}
    for kind in kinds:
        rows += _on(kind, runs, per_endpoint, out)
    out["rows"] = [r.as_dict() for r in rows]
    write("isolation", out)
    return rows


def _on(kind: str, runs: int, per_endpoint: int, out: dict[str, Any]) -> list[Row]:
    with env.database(kind) as db, ExitStack() as stack:
        bases = [stack.enter_context(receiver()) for _ in range(HEALTHY)]
        bad_base = stack.enter_context(receiver(hang=True))
        ctx = env.context(db)
        hooks = [env.make_hook(ctx, b + "/hook") for b in bases]
        bad_hook = env.make_hook(ctx, bad_base + "/hook", timeout_s=15)
        books: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        loads: list[str] = []

        def contender(with_bad: bool) -> Any:
            def go() -> float:
                loads.append(env.load())
                env.empty_queue(ctx)
                number = next(_runs)
                chosen = [*hooks, bad_hook] if with_bad else hooks
                for index, hook in enumerate(chosen):
                    prefix = f"msg_i{number}_{index}_"
                    env.bulk_insert(ctx, env.delivery_rows(hook, per_endpoint, prefix=prefix))
                for base in [*bases, bad_base]:
                    control(base, "reset")
                healthy = per_endpoint * HEALTHY
                over = env.delivered(ctx, bases, per_endpoint)
                seconds = asyncio.run(drain(ctx, healthy, timeout=120, done=over, shutdown_grace_s=0.5))
                published = env.webhook_ids(ctx)
                seen: dict[str, float] = {}
                for base in bases:
                    seen.update(control(base, "ledger"))
                hung = control(bad_base, "ledger")
                cut = [w for w, s in published.items() if s != "succeeded"]
                book = env.ledger(published, seen, cut)  # hung requests were never answered: cut off
                book["hung_at_bad_endpoint"] = len(hung)
                done = env.count_status(ctx, "succeeded")
                book["healthy_succeeded"] = done
                book["void"] = book["void"] or done < healthy
                name = "with" if with_bad else "without"
                books[name].append(book)
                rate = done / seconds
                say(f"isolation {kind} {name} bad: {rate:,.0f}/s healthy, ledger {book} load {loads[-1]}")
                return float("nan") if book["void"] else rate

            return go

        results = alternate(runs, {"without": contender(False), "with": contender(True)})
        ctx.db.dispose()
    ratio = [w / wo for w, wo in zip(results["with"], results["without"], strict=True) if w == w and wo == wo]
    load = env.load_range(loads)
    rows = [
        Row(
            "isolation",
            kind,
            "9 healthy, bad absent",
            "req/s",
            [v for v in results["without"] if v == v],
            load=load,
        ),
        Row(
            "isolation",
            kind,
            "9 healthy, bad present",
            "req/s",
            [v for v in results["with"] if v == v],
            load=load,
        ),
        Row("isolation", kind, "present / absent", "ratio", ratio, target=">= 0.9", load=load),
    ]
    rows[-1].met = bool(ratio) and rows[-1].median >= 0.9
    out["by_db"][kind] = {"rates": results, "ledgers": books, "loads": loads}
    return rows
