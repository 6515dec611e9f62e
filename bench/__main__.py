"""``python -m bench all|throughput|latency|isolation|ingest|hub|memory|scaleout|anatomy``

Options: ``--db sqlite|postgres|both`` (default both), ``--runs N`` (default 3; medians with min and
max), ``--quick`` (modest sizes), ``--rows N`` (hub and memory: delivery rows, default 1,000,000).
Prints a table and writes ``bench/results/<scenario>.json``; ``bench/results/summary.json`` holds
the last table with the command that produced it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
from typing import Any

from bench import env
from bench.harness import RESULTS
from bench.report import Row, say, show

SCENARIOS = ("throughput", "latency", "isolation", "ingest", "hub", "memory", "scaleout")
# Diagnoses, not part of ``all``: ``anatomy`` splits a delivery's CPU time between threads.
DIAGNOSES = ("anatomy",)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=("all", *SCENARIOS, *DIAGNOSES))
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="modest sizes, for a first look")
    parser.add_argument("--profile", action="store_true", help="sample qhook processes with py-spy")
    parser.add_argument("--rows", type=int, default=None, help="hub/memory: delivery rows (1,000,000)")
    args = parser.parse_args(argv)
    env.PROFILE = args.profile
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    if args.scenario == "all":
        return _all(argv if argv is not None else sys.argv[1:])
    chosen = (args.scenario,)
    rows: list[Row] = []
    for name in chosen:
        module = importlib.import_module(f"bench.{name}")
        options: dict[str, Any] = {}
        if name in ("hub", "memory") and args.rows:
            options["rows"] = args.rows
        say(f"--- {name} ({', '.join(kinds)}, {args.runs} run(s){', quick' if args.quick else ''})")
        started = time.perf_counter()
        found = module.run(kinds, args.runs, args.quick, **options)
        say(f"--- {name} took {time.perf_counter() - started:.0f} s")
        rows += found
        show(found, title=name)
    if len(chosen) > 1:
        show(rows)
    _summary(rows, argv if argv is not None else sys.argv[1:])
    return 0


def _all(argv: list[str]) -> int:
    """Each scenario in a process of its own, one after the other: a scenario inherits nothing of
    the one before (its heap, threads, garbage-collector debt), which made the PostgreSQL latency
    right after the throughput scenario differ from the same scenario run alone."""
    forwarded = [a for a in argv if a != "all"]
    rows: list[Row] = []
    failed = 0
    for name in SCENARIOS:
        path = RESULTS / f"{name}.json"
        before = path.stat().st_mtime_ns if path.exists() else None
        code = subprocess.call([sys.executable, "-m", "bench", name, *forwarded])
        failed += code != 0
        # Only what this run wrote (scale-out writes nothing for --db sqlite, for one).
        if code == 0 and path.exists() and path.stat().st_mtime_ns != before:
            saved = json.loads(path.read_text())
            rows += [_row(r) for r in saved.get("rows_table", saved.get("rows", []))]  # hub: rows_table
    show(rows)
    _summary(rows, argv)
    return 1 if failed else 0


def _row(saved: dict[str, Any]) -> Row:
    return Row(
        saved["scenario"],
        saved["db"],
        saved["metric"],
        saved["unit"],
        list(saved["runs"]),
        target=saved["target"],
        met=saved["met"],
        load=saved["load"],
        note=saved["note"],
    )


def _summary(rows: list[Row], argv: list[str]) -> None:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "summary.json"
    previous: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"rows": []}
    fresh = {(r.scenario, r.db, r.metric) for r in rows}
    kept = [r for r in previous["rows"] if (r["scenario"], r["db"], r["metric"]) not in fresh]
    payload = {
        "command": "python -m bench " + " ".join(argv),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": kept + [r.as_dict() for r in rows],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
