"""SQLite writers take turns on locks of their own (the process's, then a file's shared with other
processes), not in SQLite's busy handler."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from qhook.errors import StoreError
from qhook.store import db as db_module
from qhook.store.db import Database


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'turn.db'}")
    with database.transaction() as tx:
        tx.execute(text("CREATE TABLE t (n INTEGER)"))
    yield database
    database.dispose()


def test_a_second_writer_waits_for_its_turn_before_begin(sqlite_db: Database) -> None:
    begins: list[str] = []  # who took a connection from the pool (the step before BEGIN IMMEDIATE)
    event.listen(sqlite_db.engine, "checkout", lambda *_: begins.append(threading.current_thread().name))
    holding, release = threading.Event(), threading.Event()

    def first() -> None:
        with sqlite_db.transaction() as tx:
            tx.execute(text("INSERT INTO t VALUES (1)"))
            holding.set()
            release.wait(10)

    def second() -> None:
        with sqlite_db.transaction() as tx:
            tx.execute(text("INSERT INTO t VALUES (2)"))

    a = threading.Thread(target=first, name="first")
    b = threading.Thread(target=second, name="second")
    a.start()
    assert holding.wait(10)
    b.start()
    b.join(0.3)
    # The second writer is parked on the process's lock: it has not even taken a connection, so
    # nothing of it polls in SQLite's busy handler.
    assert b.is_alive() and begins == ["first"]
    release.set()
    a.join(10)
    b.join(10)
    assert begins == ["first", "second"]
    with sqlite_db.reading() as tx:
        assert [r[0] for r in tx.execute(text("SELECT n FROM t ORDER BY n"))] == [1, 2]


def test_no_turn_in_time_is_a_clear_error(sqlite_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_module, "WRITE_WAIT_S", 0.1)
    outcome: list[Any] = []
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with sqlite_db.transaction():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    try:
        with pytest.raises(StoreError, match="Database busy"), sqlite_db.transaction():
            outcome.append("entered")
    finally:
        release.set()
        holder.join(10)
    assert outcome == []


def test_background_work_takes_a_turn_only_when_free(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search indexer's transactions poll for a free moment instead of queueing: while a writer
    holds its turn the background one waits without a connection, then gives up with a clear error."""
    monkeypatch.setattr(db_module, "WRITE_WAIT_S", 0.2)
    checkouts: list[str] = []
    event.listen(sqlite_db.engine, "checkout", lambda *_: checkouts.append(threading.current_thread().name))
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with sqlite_db.transaction():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold, name="holder")
    holder.start()
    assert holding.wait(10)
    try:
        with pytest.raises(StoreError, match="Database busy"), sqlite_db.transaction(background=True):
            pass
        assert checkouts == ["holder"]
    finally:
        release.set()
        holder.join(10)
    with sqlite_db.transaction(background=True) as tx:  # free now: taken at once
        tx.execute(text("INSERT INTO t VALUES (3)"))
    assert checkouts[-1] == threading.current_thread().name


def _hold_turn_file(database: Database) -> int:
    """The turn file locked through a descriptor of its own, as another process holds it."""
    assert database.file is not None
    other = os.open(f"{database.file}-turn", os.O_RDONLY)
    fcntl.flock(other, fcntl.LOCK_EX)
    return other


def test_a_writer_in_another_process_waits_on_the_turn_file(sqlite_db: Database) -> None:
    checkouts: list[float] = []
    event.listen(sqlite_db.engine, "checkout", lambda *_: checkouts.append(time.monotonic()))
    other = _hold_turn_file(sqlite_db)
    done = threading.Event()

    def write() -> None:
        with sqlite_db.transaction() as tx:
            tx.execute(text("INSERT INTO t VALUES (4)"))
        done.set()

    writer = threading.Thread(target=write)
    try:
        writer.start()
        assert not done.wait(0.3)
        assert checkouts == []  # parked before BEGIN: not polling in SQLite's busy handler
    finally:
        released = time.monotonic()
        os.close(other)  # as a process ending: its lock goes with its descriptor
    assert done.wait(10)
    writer.join(10)
    assert checkouts and checkouts[0] - released < 0.05  # woken at once, not at a poll
    with sqlite_db.reading() as tx:
        assert [r[0] for r in tx.execute(text("SELECT n FROM t"))] == [4]


def test_background_work_gives_way_to_another_process(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "WRITE_WAIT_S", 0.2)
    other = _hold_turn_file(sqlite_db)
    try:
        with pytest.raises(StoreError, match="Database busy"), sqlite_db.transaction(background=True):
            pass
    finally:
        os.close(other)
    with sqlite_db.transaction(background=True) as tx:  # the other one let go: taken at once
        tx.execute(text("INSERT INTO t VALUES (5)"))


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    """Real processes hammering one database: every row lands, none meets 'database is locked'."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    database = Database(url)
    with database.transaction() as tx:
        tx.execute(text("CREATE TABLE t (n INTEGER)"))
    script = (
        "import sys\n"
        "from sqlalchemy import text\n"
        "from qhook.store.db import Database\n"
        "db = Database(sys.argv[1])\n"
        "for i in range(300):\n"
        "    with db.transaction() as tx:\n"
        "        tx.execute(text('INSERT INTO t VALUES (:n)'), {'n': int(sys.argv[2]) * 1000 + i})\n"
    )
    children = [subprocess.Popen([sys.executable, "-c", script, url, str(k)]) for k in range(3)]
    for child in children:
        assert child.wait(120) == 0
    with database.reading() as tx:
        assert tx.execute(text("SELECT count(*) FROM t")).scalar() == 900
    database.dispose()
