"""Set definitions and workflow plans shared by every transaction of this process until one changes.

Writing a result needs its set, the set's fields, its workflows and their signals. Read anew in
every transaction, that was four statements and a good part of the API's CPU per result written
(bench/latency, on PostgreSQL a round trip each). Definitions change rarely: every change bumps
one version row in the same transaction (``changed``, called by each store function that writes
fields, sets, workflows or signals), so a transaction reads that one row and takes the process's
copy when it was read at the same version.

Why it stays right:
- A copy is loaded *after* its transaction read the version, so it is at least that new (on
  PostgreSQL each statement sees everything committed before it; on SQLite the version is the
  read transaction's first statement, so both come from one snapshot).
- A transaction that changed definitions itself never reads nor fills the shared copy: what it
  sees is not committed, and may never be.
- A missing set is never kept: its creation must not depend on a bump.

Entries are frozen records and plans, read by many threads, never mutated.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, bindparam, select, update

from qhook.store import txcache
from qhook.store.db import Tx
from qhook.store.tables import definitions_state

T = TypeVar("T")
_VERSION_KEY = "definitions_version"
_CHANGED_KEY = "definitions_changed"
_ROW = definitions_state.c.id == bindparam("row_id")
_READ = select(definitions_state.c.version).where(_ROW)
_BUMP = update(definitions_state).where(_ROW).values(version=definitions_state.c.version + 1)


@dataclass
class _Shared:
    version: int = -1
    entries: dict[Hashable, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


# One copy per database (tests and the bench open several in one process), dropped with its engine.
_shared: WeakKeyDictionary[Engine, _Shared] = WeakKeyDictionary()
_shared_lock = threading.Lock()


def changed(tx: Tx) -> None:
    """A set's fields, a set, a workflow or a signal changes in this transaction.

    Forgets this transaction's memo and bumps the version (once per transaction) so every
    process drops its copy when this commits.
    """
    txcache.invalidate(tx)
    memo = txcache.memo(tx)
    if not memo.get(_CHANGED_KEY):
        memo[_CHANGED_KEY] = True
        tx.execute(_BUMP, {"row_id": 1})


def shared(tx: Tx, key: Hashable, load: Callable[[], T | None]) -> T | None:
    """The process's copy of ``key`` when current, else ``load()`` (kept when not None)."""
    memo = txcache.memo(tx)
    if memo.get(_CHANGED_KEY) or tx.get_transaction() is None:
        return load()
    version = memo.get(_VERSION_KEY)
    if version is None:
        version = memo[_VERSION_KEY] = int(tx.execute(_READ, {"row_id": 1}).scalar_one())
    copy = _copy_for(tx.engine)
    with copy.lock:
        if copy.version == version and key in copy.entries:
            found: T = copy.entries[key]
            return found
    value = load()
    if value is not None:
        with copy.lock:
            if copy.version < version:
                copy.version = version
                copy.entries = {}
            if copy.version == version:
                copy.entries[key] = value
    return value


def _copy_for(engine: Engine) -> _Shared:
    found = _shared.get(engine)
    if found is None:
        with _shared_lock:
            found = _shared.setdefault(engine, _Shared())
    return found
