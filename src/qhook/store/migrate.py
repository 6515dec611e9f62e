"""Alembic migrations, run from code: ``qhook migrate`` and the SQLite default on every start."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import OperationalError

from qhook import outage
from qhook.errors import QhookError, StoreError
from qhook.store.db import Database, driver_reason

MIGRATIONS = Path(__file__).parent / "migrations"

# The Hub's body-search objects, hand-written and none of them in tables.py: on SQLite an FTS5
# table, its shadow tables and its state row (revision 0002); on PostgreSQL the bodies' copy with
# its trigram index (0003).
UNMODELLED_PREFIX = "delivery_search"


class _QuietProbe(logging.Filter):
    """Alembic says which dialect and DDL mode it uses each time a revision is read (twice per
    /readyz call); the migrations' own lines stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Context impl", "Will assume"))


logging.getLogger("alembic.runtime.migration").addFilter(_QuietProbe())
logger = logging.getLogger(__name__)


def include_name(name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames) -> bool:
    """Autogenerate's filter: leave the hand-written search objects out of the comparison."""
    return not (type_ == "table" and name is not None and name.startswith(UNMODELLED_PREFIX))


def alembic_config(db: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    config.attributes["engine"] = db.engine
    return config


# Several processes may run ``qhook migrate`` at once on PostgreSQL: the first takes this
# advisory lock (migrations/env.py) and migrates, the others wait and find nothing left to do.
MIGRATE_LOCK = 7_201_311_047


def upgrade(db: Database, revision: str = "head") -> str | None:
    """Bring the schema to ``revision``; safe to call on every start, and from several processes.
    A schema newer than this code (a later qhook migrated it) is left as it is: its migrations only
    add, so this code works on it. Alembic stopped with a traceback there ("Can't locate revision"),
    so on SQLite, which migrates at start, an older qhook could not start at all.

    Returns the revision this call found once it held the migration lock: a process that waited
    for another finds the schema already migrated (each said "was empty")."""
    state, current = schema_state(db)
    if state == "ahead":
        return current
    config = alembic_config(db)
    with _reachable():
        command.upgrade(config, revision)
    found = config.attributes.get("found_revision", current)
    return found if isinstance(found, str) else None


@functools.cache
def _script() -> ScriptDirectory:
    """The migrations this process's code was installed with: read once, so files of a newer
    version installed beside a running process do not change what it expects."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


def head_revision() -> str | None:
    return _script().get_current_head()


def current_revision(db: Database) -> str | None:
    with _reachable(), db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


Schema = Literal["current", "behind", "ahead"]


def schema_state(db: Database) -> tuple[Schema, str | None]:
    """Whether the database's schema is the one this code expects, older (run ``qhook migrate``),
    or newer (a later version migrated it: its migrations add, so this code still works); and the
    database's revision."""
    current = current_revision(db)
    if current == head_revision():
        return "current", current
    known = current is None or any(r.revision == current for r in _script().walk_revisions())
    return ("behind" if known else "ahead"), current


def is_current(db: Database) -> bool:
    return schema_state(db)[0] == "current"


@contextmanager
def _reachable() -> Iterator[None]:
    """A database that refuses the connection is a StoreError naming why (was a traceback)."""
    try:
        yield
    except OperationalError as exc:
        raise StoreError("Database unavailable", reason=driver_reason(exc)) from exc


# The driver's words for a database that will not let qhook in, however long it waits.
_REFUSED = ("authentication failed", "does not exist", "no password supplied", "permission denied")


def wait_for(db: Database, *, sleep: Callable[[float], None] = time.sleep) -> None:
    """``qhook serve``: until the database answers. It exited at its first query when PostgreSQL
    was not up yet (started together, the database last). Credentials it refuses, or a database
    that does not exist, raise at once; waiting would not help."""
    tries = 0
    while True:
        try:
            current_revision(db)
            return
        except StoreError as exc:
            if any(words in (exc.reason or "") for words in _REFUSED):
                raise
            tries += 1
            if outage.worth_saying(tries):
                logger.warning(
                    "database unavailable at start: %s; waiting for it",
                    exc.for_operators,
                    extra={"action": "db_unavailable_at_start", "tries": tries},
                )
            sleep(outage.pause_s(tries))


def require_usable(db: Database) -> None:
    """At the start of ``qhook serve`` and ``qhook worker``: raise (StoreError, QhookError) when the
    database will not serve this process as it is (refused credentials, an unknown database, a
    schema this code cannot use yet); one that cannot be reached yet is only logged, and waited for.
    Both used to start anyway and log tracebacks, delivering nothing."""
    try:
        schema, revision = schema_state(db)
    except StoreError as exc:
        if any(words in (exc.reason or "") for words in _REFUSED):
            raise
        logger.warning(
            "database unavailable at start: %s; waiting for it",
            exc.for_operators,
            extra={"action": "db_unavailable_at_start"},
        )
        return
    if schema == "behind":
        raise QhookError(
            f"the database schema is at {revision or 'nothing'}, this qhook needs {head_revision()}: "
            "run qhook migrate"
        )
