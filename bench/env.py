"""What every scenario needs: a fresh database on SQLite or a throwaway PostgreSQL, a webhook
signal with a signing secret, envelope bodies, fast bulk inserts, the ledger, and the load note."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import delete, func, insert, select, text
from tests.support import pg

from qhook.clock import utcnow
from qhook.context import AppContext, open_context
from qhook.domain import signing
from qhook.domain.urls import origin_of
from qhook.settings import Settings
from qhook.store import migrate, sets, workflows
from qhook.store.db import Database
from qhook.store.tables import attempts, deliveries

ROOT = Path(__file__).parent.parent
QHOOK = str(Path(sys.executable).parent / "qhook")
SECRET_KEY = Fernet.generate_key().decode()
_names = itertools.count(1)
_pg: pg.PgServer | None = None


def load() -> str:
    """The 1-minute load average when a figure was taken (the machine is shared)."""
    return f"{os.getloadavg()[0]:.2f}"


def pg_server() -> pg.PgServer:
    """One throwaway PostgreSQL per bench process (fsync off, as in the tests); stopped at exit."""
    global _pg
    if _pg is None:
        import atexit

        _pg = pg.start()
        atexit.register(_pg.stop)
    return _pg


@dataclass
class Db:
    kind: str  # sqlite | postgres
    url: str
    folder: Path

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a ``qhook`` subprocess on this database."""
        return {
            **os.environ,
            "QHOOK_DATA_DIR": str(self.folder / "var"),
            "QHOOK_DATABASE_URL": self.url,
            "QHOOK_SECRET_KEY": SECRET_KEY,
            "QHOOK_ALLOW_HTTP": "true",
            "QHOOK_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
            "QHOOK_LOG_LEVEL": "WARNING",
            "QHOOK_API_RATE_LIMIT": "1000000/minute",
            **extra,
        }


@contextmanager
def database(kind: str) -> Iterator[Db]:
    """A fresh, migrated database; removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=f"qhook-bench-{kind}-"))
    try:
        if kind == "sqlite":
            url = f"sqlite:///{folder / 'qhook.db'}"
        else:
            server = pg_server()
            name = f"bench{os.getpid()}_{next(_names)}"
            with _pg_admin(server) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            url = server.url(name)
        db = Database(url)
        with db.transaction() as tx:
            if kind == "postgres":
                tx.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        migrate.upgrade(db)
        db.dispose()
        yield Db(kind, url, folder)
        if kind == "postgres":
            with _pg_admin(pg_server()) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _pg_admin(server: pg.PgServer) -> Iterator[Any]:
    import psycopg

    with psycopg.connect(server.url("postgres").replace("+psycopg", ""), autocommit=True) as conn:
        yield conn


def settings(db: Db, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": db.folder / "var",
        "database_url": db.url,
        "secret_key": SECRET_KEY,
        "allow_http": True,
        "allowed_target_networks": "127.0.0.0/8",
        "api_rate_limit": "1000000/minute",
        "log_level": "WARNING",
        **overrides,
    }
    return Settings(**values)


def context(db: Db, **overrides: Any) -> AppContext:
    return open_context(settings(db, **overrides))


@dataclass(frozen=True)
class Hook:
    set_id: int
    workflow_id: int
    signal_id: int
    url: str


def make_hook(ctx: AppContext, url: str, **config: Any) -> Hook:
    """A set, an active workflow and one webhook signal with an encrypted signing secret."""
    now = utcnow()
    with ctx.db.transaction() as tx:
        set_id = sets.insert_set(tx, name=f"Batch release {next(_names)}", kind="analysis_set", now=now)
        workflow_id = workflows.insert_workflow(
            tx,
            set_id=set_id,
            name="Released batches to ERP",
            active=True,
            triggers={"entry": True},
            filter=None,
            error_email=None,
            now=now,
        )
        signal_id = workflows.insert_signal(
            tx,
            workflow_id=workflow_id,
            position=0,
            type="webhook",
            config={"url": url, **config},
            secret_enc=ctx.box.encrypt(signing.new_secret()),
        )
    return Hook(set_id, workflow_id, signal_id, url)


def envelope(n: int, hook: Hook, now: datetime) -> str:
    """A body shaped like the workflow engine's default envelope (~700 bytes)."""
    stamp = now.strftime("%Y-%m-%d %H:%M:%S")
    result = {
        "@id": n,
        "date": stamp,
        "batchnumber_": f"B-{n:07d}",
        "status_": "released",
        "ph_": 6.8,
        "operator_": "Anna de Vries",
        "expiry_": "2026-10-02",
        "tested_": stamp,
        "note_": "Within specification; released for shipment.",
        "erp_sync_": None,
    }
    body = {
        "action": "new",
        "subject": f"Batch B-{n:07d} released",
        "message": "Released by lab.operator",
        "results": result,
        "changes": {"status_": {"old": "draft", "new": "released"}},
        "set": {"id": hook.set_id, "name": "Batch release"},
        "workflow": {"id": hook.workflow_id, "name": "Released batches to ERP"},
        "event_id": f"evt_{n:026d}",
        "occurred_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return json.dumps(body)


def delivery_rows(
    hook: Hook, count: int, *, start: int = 0, prefix: str = "msg_", status: str = "pending"
) -> Iterator[dict[str, Any]]:
    """Delivery rows as the workflow engine writes them (webhook ids ``<prefix><n>``)."""
    now = utcnow()
    endpoint = origin_of(hook.url)
    for n in range(start, start + count):
        yield {
            "webhook_id": f"{prefix}{n:026d}",
            "event_id": n,
            "workflow_id": hook.workflow_id,
            "signal_id": hook.signal_id,
            "set_id": hook.set_id,
            "result_id": n,
            "action": "new",
            "url": hook.url,
            "endpoint": endpoint,
            "body": envelope(n, hook, now),
            "status": status,
            "attempt_count": 0,
            "next_attempt_at": now,
            "ordered": False,
            "order_key": None,
            "is_test": False,
            "created_at": now,
            "updated_at": now,
            "next_trigger": "scheduled",
        }


def empty_queue(ctx: AppContext) -> None:
    """Delete every delivery and attempt between runs; on PostgreSQL vacuum the tables too, so each
    run starts from the same state: the last run's dead rows neither sit in the claim's indexes nor
    push the next rows to new pages while autovacuum comes round when it will (on one database, runs
    of the same contender slowed round after round by up to a fifth)."""
    with ctx.db.transaction() as tx:
        tx.execute(delete(attempts))
        tx.execute(delete(deliveries))
    if not ctx.db.is_sqlite:
        with ctx.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE deliveries, attempts, delivery_search")


def bulk_insert(ctx: AppContext, rows: Iterable[dict[str, Any]], chunk: int = 10_000) -> int:
    """Many delivery rows fast: COPY on PostgreSQL, executemany per chunk on SQLite."""
    if ctx.db.is_sqlite:
        total = 0
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= chunk:
                total += _sqlite_chunk(ctx, batch)
                batch = []
        if batch:
            total += _sqlite_chunk(ctx, batch)
        return total
    return _pg_copy(ctx, rows)


def _sqlite_chunk(ctx: AppContext, batch: list[dict[str, Any]]) -> int:
    with ctx.db.transaction() as tx:
        tx.execute(insert(deliveries), batch)
    return len(batch)


def _pg_copy(ctx: AppContext, rows: Iterable[dict[str, Any]]) -> int:
    columns: list[str] | None = None
    total = 0
    raw = ctx.db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        iterator = iter(rows)
        first = next(iterator, None)
        if first is None:
            return 0
        columns = list(first)
        sql = f"COPY deliveries ({', '.join(columns)}) FROM STDIN"
        with cursor.copy(sql) as copy:
            for row in itertools.chain([first], iterator):
                copy.write_row([row[c] for c in columns])
                total += 1
        raw.commit()
    finally:
        raw.close()
    return total


def count_by_status(ctx: AppContext) -> dict[str, int]:
    with ctx.db.reading() as tx:
        query = select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
        return {status: int(n) for status, n in tx.execute(query)}


def count_status(ctx: AppContext, status: str) -> int:
    with ctx.db.reading() as tx:
        query = select(func.count()).select_from(deliveries).where(deliveries.c.status == status)
        return int(tx.execute(query).scalar_one())


def delivered(ctx: AppContext, bases: Iterable[str], each: int) -> Callable[[], bool]:
    """A check that ``each`` deliveries to every receiver in ``bases`` are recorded succeeded, for
    a bench to ask every few ms while it times a worker.

    It asks the receivers first (a count they keep), on one kept-alive connection each, stopping at
    the first that lacks some, and the database only once they all have every message. A count of
    the succeeded rows every 20 ms reads each row of the queue: on PostgreSQL it ran for 2 to 5 s
    of an 8 to 10 s run of ``qhook worker --processes 2`` (pg_stat_statements), on the two cores
    the worker it timed needed.
    """
    receivers = [_Stats(base) for base in bases]
    total = each * len(receivers)

    def check() -> bool:
        return all(r.unique() >= each for r in receivers) and count_status(ctx, "succeeded") >= total

    return check


class _Stats:
    """A receiver's ``/_stats`` on one connection (a new one per question cost twice the CPU)."""

    def __init__(self, base: str) -> None:
        url = urllib.parse.urlsplit(base)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def unique(self) -> int:
        try:
            return self._ask()
        except (OSError, http.client.HTTPException):  # the idle connection closed: a new one, once
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            return self._ask()

    def _ask(self) -> int:
        self.conn.request("GET", "/_stats")
        return int(json.loads(self.conn.getresponse().read())["unique"])


def webhook_ids(ctx: AppContext, status: str | None = None) -> dict[str, str]:
    """webhook_id -> status of every delivery (optionally one status)."""
    with ctx.db.reading() as tx:
        query = select(deliveries.c.webhook_id, deliveries.c.status)
        if status is not None:
            query = query.where(deliveries.c.status == status)
        return {w: s for w, s in tx.execute(query)}


# --- the ledger ---------------------------------------------------------------------------------


def ledger(published: Iterable[str], received: Iterable[str], cut_off: Iterable[str] = ()) -> dict[str, Any]:
    """Account for every published event: delivered (the receiver saw it), cut off (the run ended
    before it was due to go: still queued or in flight by design), or missing. The run is void
    when anything is missing, or the receiver saw ids nobody published."""
    wanted = set(published)
    seen = set(received)
    stopped = set(cut_off) - seen
    delivered = wanted & seen
    missing = wanted - seen - stopped
    strangers = seen - wanted
    return {
        "published": len(wanted),
        "delivered": len(delivered),
        "cut_off": len(stopped & wanted),
        "missing": len(missing),
        "unknown": len(strangers),
        "void": bool(missing or strangers),
    }


def wait_for(check: Any, timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(interval)


def start_qhook(db: Db, *args: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [QHOOK, *args],
        env=db.env(**env),
        cwd=db.folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far (Linux /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    import signal

    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- profiles -----------------------------------------------------------------------------------

PROFILE = False  # set by ``python -m bench ... --profile``
PROFILES = ROOT / "bench" / "results" / "profiles"


def spy(pid: int, name: str, seconds: float) -> subprocess.Popen[bytes] | None:
    """Sample ``pid`` with py-spy for ``seconds`` into a collapsed-stack file (when --profile)."""
    if not PROFILE:
        return None
    PROFILES.mkdir(parents=True, exist_ok=True)
    spy_bin = str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [
            spy_bin,
            "record",
            "-p",
            str(pid),
            "-d",
            str(int(seconds)),
            "-r",
            "200",
            "-f",
            "raw",
            "-o",
            str(PROFILES / f"{name}.txt"),
            "--nonblocking",
            # Only the thread holding the GIL: where the Python CPU time goes (idle threads and
            # waits on the database or the network do not count).
            "--gil",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def spy_summary(name: str, top: int = 15) -> list[tuple[str, float, float]]:
    """(function, self share, inclusive share) of the busiest functions in a py-spy collapsed file."""
    path = PROFILES / f"{name}.txt"
    if not path.exists():
        return []
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
            for f in stack.split(";")
        ]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return []
    ranked = sorted(own, key=lambda f: own[f], reverse=True)[:top]
    return [(f, own[f] / total, inclusive[f] / total) for f in ranked]


def inclusive_summary(name: str, needles: Iterable[str]) -> dict[str, float]:
    """Inclusive share of samples whose stack passes through each needle (a function name)."""
    path = PROFILES / f"{name}.txt"
    if not path.exists():
        return {}
    hits = dict.fromkeys(needles, 0)
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        for needle in hits:
            if needle in stack:
                hits[needle] += count
    return {k: round(v / total, 3) for k, v in hits.items()} if total else {}


def spy_stop(spy: subprocess.Popen[bytes]) -> None:
    """py-spy writes its file on SIGINT (as on Ctrl-C)."""
    import signal

    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


def load_range(loads: list[str]) -> str:
    numbers = sorted(float(x) for x in loads)
    return f"{numbers[0]:.2f}-{numbers[-1]:.2f}" if numbers else ""
