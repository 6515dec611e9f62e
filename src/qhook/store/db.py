"""The engine and transactions: the one narrow door to the database.

Store functions take a ``Tx`` (an open connection inside a transaction) and plain values, and
return frozen records. Services open transactions with ``Database.transaction()``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from qhook.errors import StoreError
from qhook.settings import DEFAULT_DB_POOL_SIZE

logger = logging.getLogger(__name__)

Tx = Connection
"""An open connection inside a transaction; services pass it through without importing SQLAlchemy."""


POOL_WAIT_S = 30.0
"""How long a PostgreSQL transaction waits for a pooled connection before it is a 503."""


SQLITE_MINIMUM = (3, 35, 0)
"""RETURNING (3.35), UPDATE ... FROM (3.33), the FTS5 trigram tokenizer (3.34)."""


def check_sqlite(version: tuple[int, int, int], has_json: bool) -> None:
    """Refuse, with what to do, an SQLite library too old for qhook's SQL."""
    if version < SQLITE_MINIMUM or not has_json:
        found = ".".join(map(str, version)) + ("" if has_json else " without its JSON functions")
        need = ".".join(map(str, SQLITE_MINIMUM))
        raise StoreError(
            f"qhook needs SQLite {need} or newer with its JSON functions; this Python's sqlite3 module"
            f" has {found}. Use a Python linked with a newer SQLite (the system SQLite of Debian 12 or"
            " Ubuntu 22.04 and later qualifies), or PostgreSQL."
        )


@functools.cache  # one library per process
def _has_json() -> bool:
    with contextlib.closing(sqlite3.connect(":memory:")) as probe:
        try:
            probe.execute("SELECT json_array(1)")
        except sqlite3.OperationalError:
            return False
    return True


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL; None for PostgreSQL and in-memory SQLite."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1]
    return Path(path) if path and path != ":memory:" else None


def _create_private(file: Path) -> None:
    """A new database (and its folder) readable by qhook's user only: results, password hashes and
    API key hashes were 0644 in a 0755 folder under the usual umask. SQLite gives its -wal and -shm
    files the database file's mode. Existing files keep theirs."""
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class Database:
    """One engine per process; SQLite gets WAL, foreign keys and IMMEDIATE write transactions."""

    def __init__(self, url: str, *, pool_size: int = DEFAULT_DB_POOL_SIZE, echo: bool = False) -> None:
        self.url = url
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        kwargs: dict[str, Any] = {"echo": echo, "future": True, "pool_size": pool_size}
        self.file = sqlite_file(url)  # the SQLite database file (None: in memory, or PostgreSQL)
        self._turn_file: int | None = None
        if self.dialect == "sqlite":
            check_sqlite(sqlite3.sqlite_version_info, _has_json())
            if self.file is not None:
                _create_private(self.file)
                self._turn_file = _open_turn_file(f"{self.file}-turn")
                if self._turn_file is not None:
                    weakref.finalize(self, os.close, self._turn_file)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            # Every connection opened stays open: no overflow. An overflow connection was closed as
            # soon as it was handed back, so a burst of requests forked and ended PostgreSQL backends
            # over and over (a few ms of CPU each, on both sides) just when the machine was busiest:
            # the latency tail fed itself (bench/latency, PostgreSQL). Beyond ``pool_size`` a
            # request waits for a connection; past POOL_WAIT_S it is a 503.
            kwargs["max_overflow"] = 0
            kwargs["pool_timeout"] = POOL_WAIT_S
        self.engine: Engine = create_engine(url, **kwargs)
        self._writer = threading.Lock() if self.dialect == "sqlite" else None
        # PostgreSQL: the server process behind each connection this engine holds open, to tell
        # this process's own NOTIFYs from other processes' (``queue.listen``).
        self.backend_pids: set[int] = set()
        if self.dialect == "sqlite":
            _sqlite_setup(self.engine)
        else:
            _postgresql_setup(self.engine, self.backend_pids)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def transaction(self, *, background: bool = False) -> Iterator[Tx]:
        """A write transaction: commits on success, rolls back on any exception.

        ``background`` (SQLite): work that can wait, such as the search indexer, takes its turn
        only when no writer holds one, instead of queueing ahead of requests that arrive meanwhile.
        """
        with self._write_turn(background), _unavailable_as_store_error(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def autocommit(self) -> Iterator[Tx]:
        """Statements that each stand on their own (a counter's upsert, a key lookup).

        On PostgreSQL each one commits by itself: no BEGIN and COMMIT round trips around them. On
        SQLite they share one write transaction (in-process, a transaction costs no round trip,
        and a write needs the write turn anyway).
        """
        if self.is_sqlite:
            with self.transaction() as tx:
                yield tx
            return
        with _unavailable_as_store_error(), self.engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def _write_turn(self, background: bool = False) -> Iterator[None]:
        """SQLite: writers take turns on locks of their own before BEGIN IMMEDIATE.

        SQLite lets one writer in at a time and makes the others poll in its busy handler, which
        sleeps in growing steps (up to 100 ms) and so misses the moment the lock frees: an API
        request waiting behind the worker's outcome batch or the search indexer lost tens of ms
        (bench/latency). A thread waits on this process's lock, then the process on an flock of
        the file ``<database>-turn`` shared with the other processes (``qhook serve --no-worker``
        beside ``qhook worker``, the CLI): the kernel wakes a waiter the moment the writer before
        it commits. A process that dies holding it lets go with its last file descriptor.
        """
        if self._writer is None:
            yield
            return
        if not (
            _take_when_free(functools.partial(self._writer.acquire, blocking=False))
            if background
            else self._writer.acquire(timeout=WRITE_WAIT_S)
        ):
            raise StoreError(f"Database busy: no write turn within {WRITE_WAIT_S:g} s")
        turn_file = self._turn_file
        try:
            if turn_file is not None and not _take_file_turn(turn_file, background):
                raise StoreError(f"Database busy: no write turn within {WRITE_WAIT_S:g} s")
            try:
                yield
            finally:
                if turn_file is not None:
                    fcntl.flock(turn_file, fcntl.LOCK_UN)
        finally:
            self._writer.release()

    @contextmanager
    def reading(self) -> Iterator[Tx]:
        """Reads: on SQLite a deferred transaction (one snapshot; readers never wait for the writer
        lock). On PostgreSQL in autocommit: under READ COMMITTED every statement of a transaction
        takes its own snapshot anyway, so a read-only transaction only added a BEGIN and a COMMIT
        round trip (two of the worker's and the API's per read)."""
        with _unavailable_as_store_error(), self.engine.connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(qhook_read_only=True)
            else:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            with conn.begin():
                yield conn

    def ping(self) -> None:
        # An open SQLite connection goes on writing into a file that was moved or deleted under it,
        # where no backup, restart or other process finds it: not ready.
        if self.file is not None and not self.file.exists():
            raise StoreError(
                reason=f"the database file {self.file} is gone (moved or deleted); restart qhook"
            )
        with self.reading() as tx:
            tx.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()  # the turn file stays open: the engine may still be used after this


@contextmanager
def _unavailable_as_store_error() -> Iterator[None]:
    """A lost connection, a server that cannot be reached or no free pooled connection in time
    becomes StoreError (a 503)."""
    try:
        yield
    except PoolTimeout as exc:
        raise StoreError(f"Database busy: no free connection within {POOL_WAIT_S:g} s") from exc
    except (OperationalError, DBAPIError) as exc:
        lost = exc.connection_invalidated or _is_unavailable(exc)
        if isinstance(exc, DBAPIError) and not lost:
            raise
        raise StoreError("Database unavailable", reason=driver_reason(exc)) from exc


def driver_reason(exc: DBAPIError) -> str:
    """The driver's own first line, e.g. 'connection to server at "db" (10.0.0.5), port 5432
    failed: FATAL:  password authentication failed for user "qhook"' (never the password)."""
    text = " ".join(str(exc.orig).split("\n")[0].split()) if exc.orig is not None else ""
    name = type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__
    return f"{name}: {text[:300]}" if text else name


def _is_unavailable(exc: DBAPIError) -> bool:
    return isinstance(exc, OperationalError) and "locked" not in str(exc.orig).lower()


WRITE_WAIT_S = 30.0
"""How long a SQLite writer waits for its turn (as long as SQLite's own busy_timeout)."""
BACKGROUND_POLL_S = 0.005


def _take_when_free(take_now: Callable[[], bool]) -> bool:
    """Take a lock at a moment nobody holds it (polling ``take_now``, which never waits), never in
    the queue of its waiters; False after WRITE_WAIT_S."""
    deadline = time.monotonic() + WRITE_WAIT_S
    while not take_now():
        if time.monotonic() >= deadline:
            return False
        time.sleep(BACKGROUND_POLL_S)
    return True


def _open_turn_file(path: str) -> int | None:
    """Read-only is enough for flock, and lets another account's CLI share the file. A folder this
    process cannot create it in leaves its writers to SQLite's own lock and busy handler."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        logger.warning(
            "no write-turn file %s (%s): writers of other processes meet in SQLite's busy handler",
            path,
            exc.strerror or exc,
            extra={"action": "write_turn_file_unavailable"},
        )
        return None


def _take_file_turn(fd: int, background: bool) -> bool:
    """The write turn among processes. Foreground work queues in the kernel and is woken at once
    (holders keep it for one transaction; SQLite's own lock would hold a stuck one's waiters too);
    background work polls for a free moment, as on the process's lock."""
    if background:
        return _take_when_free(functools.partial(_flock_now, fd))
    fcntl.flock(fd, fcntl.LOCK_EX)
    return True


def _flock_now(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


IDLE_PING_S = 1.0
"""A pooled PostgreSQL connection idle longer than this is pinged before use (see _postgresql_setup)."""


def _postgresql_setup(engine: Engine, backend_pids: set[int]) -> None:
    # Pessimistic disconnect handling, but only for connections that sat idle: SQLAlchemy's
    # pool_pre_ping spends a round trip on every checkout, several per API request and per
    # worker batch (bench/latency). A connection back in use within a second skips the ping; one
    # that waited longer (a restarted server, a proxy's idle timeout) is pinged and, when dead,
    # replaced transparently before anyone uses it.
    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since <= IDLE_PING_S:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"pooled connection is gone: {exc}") from exc
        if not alive:
            raise DisconnectionError("pooled connection failed its ping")

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, record: Any) -> None:
        # qhook's statements are short OLTP queries. JIT judged the worker's claim "expensive" from
        # row estimates on a large backlog and spent ~300 ms compiling it on every call. A SET on
        # connect (not a startup "options" parameter, which PgBouncer refuses); committed so the
        # pool's rollback on return keeps it.
        with dbapi_conn.cursor() as cursor:
            cursor.execute("SET jit = off")
        dbapi_conn.commit()
        record.info["backend_pid"] = dbapi_conn.info.backend_pid
        backend_pids.add(record.info["backend_pid"])

    @event.listens_for(engine, "close")
    def _close(_dbapi_conn: Any, record: Any) -> None:
        backend_pids.discard(record.info.get("backend_pid"))

    @event.listens_for(engine, "detach")
    def _detach(_dbapi_conn: Any, record: Any) -> None:
        # A detached connection is closed outside the pool, with no "close" event.
        backend_pids.discard(record.info.get("backend_pid"))


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook emit BEGIN itself so writers can take the lock up front.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # IMMEDIATE: a writer waits for the lock at BEGIN (honouring busy_timeout) instead of
        # failing with SQLITE_BUSY when a deferred read upgrades to a write.
        read_only = conn.get_execution_options().get("qhook_read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
