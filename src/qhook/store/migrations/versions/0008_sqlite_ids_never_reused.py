"""SQLite: ids of users, sets, fields, results, workflows, signals and auth profiles are never
given again (AUTOINCREMENT) (hand-written)

Without AUTOINCREMENT SQLite gives a new row the highest id plus one: delete the newest result and
the next result stored got its id. Receivers saw "deleted @id 6", then "new @id 6" for another
batch; the Hub listed two workflows' deliveries under one id; a user limited to a deleted set saw
the next set made. Each table is rebuilt with AUTOINCREMENT (rows, ids, indexes and references
kept; migrations/env.py turns SQLite's foreign keys off around it and checks them after), and its
counter starts at the highest id any table still refers to, so even ids deleted before this
migration are not given again. PostgreSQL's sequences never reused ids.

On both databases, users limited to sets that no longer exist lose those ids from their limit
(deleting a set did not take it out, and the next set could get its id): the limit then names
only sets that exist, or none.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# table -> the columns elsewhere that hold its ids (deleted rows may live on there).
REFERENCED_BY = {
    "users": (),
    "sets": (
        "results.set_id",
        "workflows.set_id",
        "fields.set_id",
        "events.set_id",
        "deliveries.set_id",
        "email_outbox.set_id",
    ),
    "fields": (),
    "results": ("events.result_id", "deliveries.result_id", "schedules.result_id", "email_outbox.result_id"),
    "workflows": (
        "signals.workflow_id",
        "deliveries.workflow_id",
        "schedules.workflow_id",
        "email_outbox.workflow_id",
    ),
    "signals": ("deliveries.signal_id", "email_outbox.signal_id"),
    "auth_profiles": ("oauth_tokens.auth_profile_id",),
}


def upgrade() -> None:
    bind = op.get_bind()
    _drop_missing_sets_from_limits(bind)
    if bind.dialect.name != "sqlite":
        return
    for table, references in REFERENCED_BY.items():
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass
        highest = [f"(SELECT max(id) FROM {table})"]
        highest += [f"(SELECT max({column.split('.')[1]}) FROM {column.split('.')[0]})" for column in references]
        top = bind.exec_driver_sql(f"SELECT max({', '.join(f'coalesce({h}, 0)' for h in highest)}, 0)").scalar()
        if top:
            bind.exec_driver_sql("DELETE FROM sqlite_sequence WHERE name = ?", (table,))
            bind.exec_driver_sql("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, int(top)))


def _drop_missing_sets_from_limits(bind: sa.Connection) -> None:
    sets = {int(row[0]) for row in bind.exec_driver_sql("SELECT id FROM sets")}
    limits = bind.exec_driver_sql("SELECT id, set_ids FROM users WHERE set_ids IS NOT NULL").fetchall()
    for user_id, raw in limits:
        limit = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(limit, list):
            continue  # JSON null: every set
        kept = [i for i in limit if i in sets]
        if kept != limit:
            bind.execute(
                sa.text("UPDATE users SET set_ids = :kept WHERE id = :id").bindparams(
                    sa.bindparam("kept", type_=sa.JSON().with_variant(JSONB(), "postgresql"))
                ),
                {"kept": kept, "id": user_id},
            )


def downgrade() -> None:
    pass  # AUTOINCREMENT only keeps ids from coming back; the tables read the same without it
