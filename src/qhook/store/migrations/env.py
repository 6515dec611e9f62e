"""Alembic environment: uses the engine handed over by qhook.store.migrate, or the configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, create_engine, text

from qhook.store.migrate import MIGRATE_LOCK, include_name
from qhook.store.tables import metadata

config = context.config
engine: Engine | None = config.attributes.get("engine")
if engine is None:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")

with engine.connect() as connection:
    postgres = connection.dialect.name == "postgresql"
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
            context.run_migrations()
        connection.commit()
    finally:
        if postgres:  # a session lock outlives transactions: the pooled connection must not keep it
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATE_LOCK})
            connection.commit()
