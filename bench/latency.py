"""Scenario 2: results created at a steady rate through the API of a real ``qhook serve`` process
(on SQLite with the worker in the same process, woken by the commit, and apart, woken by the
doorbell; on PostgreSQL with a separate ``qhook worker`` woken by NOTIFY), a workflow firing on
each. Latency is the
receiver's arrival time minus the time the result was *scheduled* to be created (open loop: a
slow answer does not delay the next request, so queueing shows up in the figure)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import statistics
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from sqlalchemy import select
from tests.support.pg import free_port

from bench import env
from bench.harness import control, receiver, write
from bench.report import Row, say
from qhook.services import sets as sets_service
from qhook.services import users, workflows
from qhook.store.tables import deliveries

RATE = 200  # results per second
FIELDS = [
    {"name": "batchnumber_", "type": "text", "required": True},
    {"name": "status_", "type": "list", "options": ["draft", "released", "blocked"]},
    {"name": "ph_", "type": "number"},
    {"name": "operator_", "type": "text"},
]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def drive(api: str, key: str, set_id: int, count: int, run: int) -> tuple[dict[int, float], int]:
    """POST ``count`` results at RATE/s; returns result id -> scheduled wall time, and errors.

    The driver's own garbage collector stays off while it drives: a full collection of the bench
    process (the ledgers and rows it holds, 50-70 ms timed with ``gc.callbacks``) sent the next
    requests late, and the figure counts from the scheduled time, so qhook was charged for it.
    """
    gc.collect()
    gc.disable()
    try:
        return await _drive(api, key, set_id, count, run)
    finally:
        gc.enable()


async def _drive(api: str, key: str, set_id: int, count: int, run: int) -> tuple[dict[int, float], int]:
    scheduled: dict[int, float] = {}
    errors = 0
    headers = {"Authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(i: int, at: float) -> None:
            nonlocal errors
            values = {"batchnumber_": f"L-{run}-{i}", "status_": "released", "ph_": 6.8, "operator_": "bench"}
            try:
                async with session.post(f"{api}/api/v1/sets/{set_id}/results", json={"values": values}) as r:
                    if r.status != 201:
                        errors += 1
                        return
                    scheduled[int((await r.json())["id"])] = at
            except aiohttp.ClientError:
                errors += 1

        loop = asyncio.get_running_loop()
        start_wall = time.time() + 0.2
        start_loop = loop.time() + 0.2
        tasks = []
        for i in range(count):
            due = start_loop + i / RATE
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, start_wall + i / RATE)))
        await asyncio.gather(*tasks)
    return scheduled, errors


def wait_up(api: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("qhook serve did not come up")


def run(kinds: list[str], runs: int, quick: bool) -> list[Row]:
    seconds = 5 if quick else 15
    rows: list[Row] = []
    out: dict[str, Any] = {"rate_per_s": RATE, "seconds_per_run": seconds, "by_db": {}}
    for kind in kinds:
        # PostgreSQL: the scale-out layout, `qhook serve --no-worker` and a `qhook worker` woken by
        # NOTIFY. SQLite: the default single `qhook serve` (API, worker and scheduler in one
        # process, as design.md has it) and its one worker apart, woken by the doorbell; both set
        # up at once and their runs alternated, so the machine's slow spells hit both alike.
        with contextlib.ExitStack() as stack:
            layouts = [
                stack.enter_context(_layout(kind, apart))
                for apart in ((False, True) if kind == "sqlite" else (True,))
            ]
            for number in range(runs):
                for layout in layouts:
                    _measure(layout, number, seconds)
            for layout in layouts:
                rows += layout.rows()
                out["by_db"][layout.label] = {
                    "p50_ms": layout.p50s,
                    "p99_ms": layout.p99s,
                    "ledgers": layout.books,
                    "loads": layout.loads,
                }
    out["rows"] = [r.as_dict() for r in rows]
    write("latency", out)
    return rows


@dataclass
class Layout:
    """One running qhook (serve, and a worker when apart) with its receiver and what it measured."""

    label: str
    ctx: Any
    base: str
    api: str
    key: str
    set_id: int
    pids: list[int]
    p50s: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)
    worker_p50s: list[float] = field(default_factory=list)
    worker_p99s: list[float] = field(default_factory=list)
    books: list[dict[str, Any]] = field(default_factory=list)
    loads: list[str] = field(default_factory=list)

    def rows(self) -> list[Row]:
        load = env.load_range(self.loads)
        p50 = Row(
            "latency", self.label, "p50 scheduled->receiver", "ms", self.p50s, target="<= 15", load=load
        )
        p50.met = bool(self.p50s) and p50.median <= 15
        p99 = Row(
            "latency", self.label, "p99 scheduled->receiver", "ms", self.p99s, target="<= 100", load=load
        )
        p99.met = bool(self.p99s) and p99.median <= 100
        return [
            p50,
            p99,
            Row("latency", self.label, "p50 row written->receiver", "ms", self.worker_p50s, load=load),
            Row("latency", self.label, "p99 row written->receiver", "ms", self.worker_p99s, load=load),
        ]


@contextlib.contextmanager
def _layout(kind: str, apart: bool) -> Iterator[Layout]:
    label = "sqlite, worker apart" if kind == "sqlite" and apart else kind
    with env.database(kind) as db, receiver() as base:
        ctx = env.context(db)
        found = sets_service.create_set(ctx.db, name="Batch release", fields=FIELDS, actor="bench")
        workflows.create_workflow(
            ctx,
            {
                "name": "Released batches to ERP",
                "set_id": found.id,
                "triggers": {"entry": True},
                "filter": {"field": "status_", "op": "eq", "value": "released"},
                "signals": [
                    {"type": "webhook", "url": base + "/hook", "subject": "Batch {{ batchnumber_ }}"}
                ],
            },
            actor="bench",
        )
        users.create_user(ctx.db, "bench", "admin")
        _, key = users.create_api_key(ctx.db, "bench")
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        server = env.start_qhook(db, "serve", "--port", str(port), *(["--no-worker"] if apart else []))
        worker = env.start_qhook(db, "worker") if apart else None
        try:
            wait_up(api)
            # Warm-up, not measured: a second of the same traffic (pools fill, statements get
            # prepared, caches warm) as a server in production has long had.
            warm, _ = asyncio.run(drive(api, key, found.id, RATE, -1))
            env.wait_for(functools.partial(_all_succeeded, ctx, set(warm)), timeout=60)
            pids = [server.pid] + ([worker.pid] if worker is not None else [])
            yield Layout(label, ctx, base, api, key, found.id, pids)
        finally:
            env.stop_process(server)
            if worker is not None:
                env.stop_process(worker)
            ctx.db.dispose()


def _measure(layout: Layout, number: int, seconds: float) -> None:
    ctx, base, label = layout.ctx, layout.base, layout.label
    count = int(RATE * seconds)
    control(base, "reset")
    layout.loads.append(env.load())
    spy = env.spy(layout.pids[0], f"latency-{label}", seconds) if number == 0 else None
    cpu_before = [env.cpu_seconds(pid) for pid in layout.pids]
    scheduled, errors = asyncio.run(drive(layout.api, layout.key, layout.set_id, count, number))
    if spy is not None:
        spy.wait()
        for frame, own, incl in env.spy_summary(f"latency-{label}"):
            say(f"  profile self {own:6.1%} incl {incl:6.1%}  {frame}")
    ids = set(scheduled)
    env.wait_for(functools.partial(_all_succeeded, ctx, ids), timeout=60)
    # CPU per result, the API process first: near one core at RATE, requests queue behind the GIL.
    used = [env.cpu_seconds(pid) - before for pid, before in zip(layout.pids, cpu_before, strict=True)]
    with ctx.db.reading() as tx:
        query = select(
            deliveries.c.webhook_id,
            deliveries.c.result_id,
            deliveries.c.status,
            deliveries.c.created_at,
        )
        mine = [r for r in tx.execute(query) if r.result_id in ids]
    arrivals: dict[str, float] = control(base, "ledger")
    book = env.ledger(
        [r.webhook_id for r in mine],
        arrivals,
        [r.webhook_id for r in mine if r.status != "succeeded"],
    )
    book["api_errors"] = errors
    book["results"] = len(ids)
    book["void"] = book["void"] or errors > 0 or len(mine) != len(ids)
    lat = [(arrivals[r.webhook_id] - scheduled[r.result_id]) * 1000 for r in mine if r.webhook_id in arrivals]
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    # Where the time goes: scheduled -> row written (API), row written -> receiver (worker).
    api_part = [(r.created_at.timestamp() - scheduled[r.result_id]) * 1000 for r in mine]
    worker_part = [
        (arrivals[r.webhook_id] - r.created_at.timestamp()) * 1000 for r in mine if r.webhook_id in arrivals
    ]
    book["api_p50_ms"] = round(percentile(api_part, 50), 1)
    book["api_p99_ms"] = round(percentile(api_part, 99), 1)
    book["worker_p50_ms"] = round(percentile(worker_part, 50), 1)
    book["worker_p99_ms"] = round(percentile(worker_part, 99), 1)
    book["cpu_ms_per_result"] = [round(x / max(len(ids), 1) * 1000, 2) for x in used]  # serve (, worker)
    layout.books.append(book)
    say(
        f"latency {label} run {number}: p50 {p50:.1f} ms p99 {p99:.1f} ms "
        f"max {max(lat):.0f} ms mean {statistics.mean(lat):.1f} "
        f"ledger {book} load {layout.loads[-1]}"
    )
    if not book["void"]:
        layout.p50s.append(p50)
        layout.p99s.append(p99)
        layout.worker_p50s.append(book["worker_p50_ms"])
        layout.worker_p99s.append(book["worker_p99_ms"])


def _all_succeeded(ctx: Any, ids: set[int]) -> bool:
    with ctx.db.reading() as tx:
        query = select(deliveries.c.result_id).where(deliveries.c.status == "succeeded")
        return sum(1 for (result_id,) in tx.execute(query) if result_id in ids) >= len(ids)
