"""Alembic environment: uses the engine handed over by qhook.store.migrate, or the configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, create_engine, text

from qhook.store.migrate import include_name
from qhook.store.tables import metadata

config = context.config
engine: Engine | None = config.attributes.get("engine")
if engine is None:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # The trigram index on deliveries.body needs pg_trgm (a trusted extension since
            # PostgreSQL 13: the database owner may create it).
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        context.run_migrations()
    connection.commit()
