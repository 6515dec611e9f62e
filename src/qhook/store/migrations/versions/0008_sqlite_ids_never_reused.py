"""SQLite: ids of users, sets, fields, results, workflows, signals and auth profiles are never
given again (AUTOINCREMENT) (hand-written)

Without AUTOINCREMENT SQLite gives a new row the highest id plus one: delete the newest result and
the next result stored got its id. Receivers saw "deleted @id 6", then "new @id 6" for another
batch; the Hub listed two workflows' deliveries under one id; a user limited to a deleted set saw
the next set made. Each table is rebuilt with AUTOINCREMENT (rows, ids, indexes and references
kept; migrations/env.py turns SQLite's foreign keys off around it and checks them after), and its
counter starts at the highest id any table still refers to, so even ids deleted before this
migration are not given again. PostgreSQL's sequences never reused ids: nothing to do there.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# table -> the columns elsewhere that hold its ids (deleted rows may live on there).
REFERENCED_BY = {
    "users": (),
    "sets": ("results.set_id", "workflows.set_id", "fields.set_id", "events.set_id", "deliveries.set_id"),
    "fields": (),
    "results": ("events.result_id", "deliveries.result_id", "schedules.result_id"),
    "workflows": ("signals.workflow_id", "deliveries.workflow_id", "schedules.workflow_id"),
    "signals": ("deliveries.signal_id",),
    "auth_profiles": ("oauth_tokens.auth_profile_id",),
}


def upgrade() -> None:
    bind = op.get_bind()
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


def downgrade() -> None:
    pass  # AUTOINCREMENT only keeps ids from coming back; the tables read the same without it
