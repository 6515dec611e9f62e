"""Ingest (issue 7, scenario 4): results through ``POST /api/storeResults`` with workflows firing.

    .venv/bin/python -m bench.ingest_profile [--db sqlite|postgres|both] [--results 20000]
        [--batch 1000] [--workflows 10] [--key-field] [--profile]

The app runs in this process (httpx over ASGI, no worker), so the figure is the API + store +
fan-out path alone. Half the workflows fire (entry, no filter), half do not (filter not met); each
has one webhook signal. The run is void unless every expected delivery row was written.
``--key-field`` sends every call with ``keyField=batchnumber_`` (half updates, half new results).
``--profile`` prints the top of a cProfile of the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import func, select
from tests.support import pg

from qhook.api import compat as compat_api
from qhook.api.app import create_app
from qhook.context import AppContext, open_context
from qhook.domain.access import Principal
from qhook.services import users
from qhook.settings import Settings
from qhook.store import migrate
from qhook.store.db import Database
from qhook.store.tables import deliveries, events, results

SECRET = Fernet.generate_key().decode()


def _settings(url: str, folder: Path) -> Settings:
    return Settings(
        data_dir=folder / "var",
        database_url=url,
        secret_key=SECRET,
        api_rate_limit="1000000/minute",
        allow_http=True,
        allowed_target_networks="127.0.0.0/8",
    )


async def _setup(http: httpx.AsyncClient, workflows: int) -> int:
    created = await http.post(
        "/api/v1/sets",
        json={
            "name": "Ingest",
            "kind": "analysis_set",
            "fields": [
                {"name": "batchnumber_", "type": "text", "required": True},
                {"name": "status_", "type": "list", "options": ["draft", "released", "blocked"]},
                {"name": "ph_", "type": "number"},
                {"name": "count_", "type": "integer"},
                {"name": "operator_", "type": "text"},
            ],
        },
    )
    created.raise_for_status()
    set_id = int(created.json()["id"])
    for n in range(workflows):
        firing = n % 2 == 0
        doc: dict[str, Any] = {
            "name": f"wf {n}",
            "set_id": set_id,
            "active": True,
            "triggers": {"entry": True, "modification": {}},
            "signals": [
                {
                    "type": "webhook",
                    "url": f"http://127.0.0.1:9/hook/{n}",
                    "subject": "Batch {{ batchnumber_ }} " + ("released" if firing else "?"),
                    "message": "by {{ actor }}",
                }
            ],
        }
        if not firing:
            doc["filter"] = {"field": "status_", "op": "eq", "value": "blocked"}
        response = await http.post("/api/v1/workflows", json=doc)
        response.raise_for_status()
    return set_id


def _batch(start: int, size: int, keyed: bool) -> list[dict[str, Any]]:
    items = []
    for i in range(start, start + size):
        # With keyField, every other key repeats an earlier call's key: an update, not a new result.
        key = i // 2 if keyed and i % 2 else i
        items.append(
            {
                "batchnumber_": f"B-{key:07d}",
                "status_": "released",
                "ph_": 6.5 + (i % 10) / 10,
                "count_": i,
                "operator_": "J. van Dijk",
            }
        )
    return items


def _profile_store(profiler: cProfile.Profile) -> None:
    """The operation runs in a worker thread, so profile it there rather than the event loop."""
    plain = compat_api._store

    def profiled(ctx: AppContext, principal: Principal, params: dict[str, str]) -> Any:
        profiler.enable()
        try:
            return plain(ctx, principal, params)
        finally:
            profiler.disable()

    compat_api._store = profiled


async def _ingest(
    url: str, folder: Path, total: int, batch: int, workflows: int, keyed: bool, profile: bool
) -> dict[str, Any]:
    ctx = open_context(_settings(url, folder))
    try:
        users.create_user(ctx.db, "bench", "admin", password="bench-password")
        key = users.create_api_key(ctx.db, "bench", label="bench")[1]
        transport = httpx.ASGITransport(app=create_app(ctx))
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=headers, timeout=600
        ) as http:
            set_id = await _setup(http, workflows)
            calls = [_batch(start, batch, keyed) for start in range(0, total, batch)]
            # Encoded before the clock starts: the client's urlencoding is not qhook's work.
            bodies = [
                urlencode(
                    {"setId": str(set_id), "results": json.dumps(items)}
                    | ({"keyField": "batchnumber_"} if keyed else {})
                ).encode()
                for items in calls
            ]
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            profiler = cProfile.Profile() if profile else None
            if profiler:
                _profile_store(profiler)
            started = time.perf_counter()
            cpu_started = time.process_time()
            for body in bodies:
                response = await http.post("/api/storeResults", content=body, headers=form)
                if response.status_code != 200:
                    raise RuntimeError(f"storeResults: {response.status_code} {response.text[:500]}")
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
        with ctx.db.reading() as tx:
            n_results = tx.execute(select(func.count()).select_from(results)).scalar_one()
            n_events = tx.execute(select(func.count()).select_from(events)).scalar_one()
            n_deliveries = tx.execute(select(func.count()).select_from(deliveries)).scalar_one()
        firing = (workflows + 1) // 2
        if n_deliveries != n_events * firing:
            raise RuntimeError(f"void: {n_events} events but {n_deliveries} deliveries (x{firing})")
        out = {
            "results_per_s": round(total / elapsed, 1),
            "seconds": round(elapsed, 2),
            # The machine is shared: results per CPU-second of this process is the steadier figure.
            "results_per_cpu_s": round(total / cpu, 1),
            "results": n_results,
            "events": n_events,
            "deliveries": n_deliveries,
        }
        if profiler:
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(45)
            print(text.getvalue())
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
            print(text.getvalue())
        return out
    finally:
        ctx.db.dispose()


def run(db: str, **kwargs: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="qhook-ingest-") as tmp:
        folder = Path(tmp)
        if db == "sqlite":
            return asyncio.run(_ingest(f"sqlite:///{folder / 'qhook.db'}", folder, **kwargs))
        server = pg.start()
        try:
            import psycopg

            with psycopg.connect(server.url("postgres").replace("+psycopg", ""), autocommit=True) as conn:
                conn.execute("CREATE DATABASE ingest")
            url = server.url("ingest")
            database = Database(url)
            migrate.upgrade(database)
            database.dispose()
            return asyncio.run(_ingest(url, folder, **kwargs))
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--results", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--workflows", type=int, default=10)
    parser.add_argument("--key-field", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    for db in ["sqlite", "postgres"] if args.db == "both" else [args.db]:
        figure = run(
            db,
            total=args.results,
            batch=args.batch,
            workflows=args.workflows,
            keyed=args.key_field,
            profile=args.profile,
        )
        print(json.dumps({"db": db, "keyed": args.key_field, **figure}))


if __name__ == "__main__":
    main()
