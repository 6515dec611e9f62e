"""PostgreSQL: every statement that inserts deliveries wakes the workers (hand-written)

The fan-out sent ``NOTIFY qhook_deliveries`` itself: one more round trip in every result write
that queued something (bench/latency), and a path that inserts deliveries without it would have
left them to the workers' poll. Now a statement-level trigger on deliveries sends it, inside the
inserting transaction: delivered at commit, never for a rolled-back insert, and PostgreSQL folds
the notifications of one transaction into one.

SQLite has no NOTIFY: ``qhook serve`` wakes its own worker in-process.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CREATE = (
    "CREATE FUNCTION deliveries_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM pg_notify('qhook_deliveries', ''); RETURN NULL; END $$",
    "CREATE TRIGGER deliveries_notify AFTER INSERT ON deliveries "
    "FOR EACH STATEMENT EXECUTE FUNCTION deliveries_notify()",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in CREATE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS deliveries_notify ON deliveries")
    op.execute("DROP FUNCTION IF EXISTS deliveries_notify()")
