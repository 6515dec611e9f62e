"""Alembic migrations, run from code: ``qhook migrate`` and the SQLite default on every start."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from qhook.store.db import Database

MIGRATIONS = Path(__file__).parent / "migrations"

# The Hub's body-search objects, hand-written and none of them in tables.py: on SQLite an FTS5
# table, its shadow tables and its state row (revision 0002); on PostgreSQL the bodies' copy with
# its trigram index (0003).
UNMODELLED_PREFIX = "delivery_search"


def include_name(name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames) -> bool:
    """Autogenerate's filter: leave the hand-written search objects out of the comparison."""
    return not (type_ == "table" and name is not None and name.startswith(UNMODELLED_PREFIX))


def alembic_config(db: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    config.attributes["engine"] = db.engine
    return config


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to call on every start."""
    command.upgrade(alembic_config(db), revision)


def head_revision(db: Database) -> str | None:
    return ScriptDirectory.from_config(alembic_config(db)).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_current(db: Database) -> bool:
    return current_revision(db) == head_revision(db)
