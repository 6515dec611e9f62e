"""Alembic environment: uses the engine handed over by qhook.store.migrate, or the configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, Engine, create_engine, text

from qhook.errors import QhookError
from qhook.store.migrate import MIGRATE_LOCK, include_name
from qhook.store.tables import metadata

config = context.config
engine: Engine | None = config.attributes.get("engine")
if engine is None:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")


def _orphans(connection: Connection) -> set[tuple[object, ...]]:
    return {tuple(row) for row in connection.exec_driver_sql("PRAGMA foreign_key_check")}


with engine.connect() as connection:
    postgres = connection.dialect.name == "postgresql"
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # A table rebuilt in batch mode is dropped and its copy renamed; with foreign keys on, the
        # drop would delete (cascade) every row that refers to it. The PRAGMA works only outside a
        # transaction, so on the driver's connection before SQLAlchemy begins one; the keys are
        # checked before the commit and turned on again after.
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
    if postgres:  # one migrating process at a time; the others then find the schema current
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATE_LOCK})
        connection.commit()
    try:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            include_name=include_name,
        )
        with context.begin_transaction():
            if postgres:
                # The trigram index on deliveries.body needs pg_trgm (a trusted extension since
                # PostgreSQL 13: the database owner may create it).
                connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
            found = context.get_context().get_current_revision()  # read under the lock
            context.config.attributes["found_revision"] = found
            pending = found != context.get_head_revision()
            # Rows that already referred to missing rows (deleted in the sqlite3 shell, where
            # foreign keys are off) are not this migration's doing: only new ones stop it.
            orphans = _orphans(connection) if sqlite and pending else set()
            context.run_migrations()
            if sqlite and pending:
                made = _orphans(connection) - orphans
                if made:
                    tables = ", ".join(sorted({str(row[0]) for row in made}))
                    raise QhookError(
                        f"the migration would leave rows of {tables} referring to missing rows; "
                        "nothing was changed (keep the database and report this)"
                    )
        connection.commit()
    finally:
        if sqlite:
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
        if postgres:  # a session lock outlives transactions: the pooled connection must not keep it
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATE_LOCK})
            connection.commit()
