"""SQLite: times written in bulk at a whole second get their microseconds (hand-written)

Every statement writes a time on SQLite as ``YYYY-MM-DD HH:MM:SS.ffffff``; the bulk inserts
(results and events from storeResults, deliveries from the fan-out) went through the sqlite3
adapter, which leaves ``.000000`` out. Text comparison ranked ``... 00:00:00`` below an equal
``... 00:00:00.000000``: equal dates sorted apart, and a result's place changed when it was edited.
This writes the missing microseconds into the rows written so.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

WRITTEN_IN_BULK = {
    "results": ("date", "created_at", "updated_at"),
    "events": ("occurred_at",),
    "deliveries": ("next_attempt_at", "created_at", "updated_at"),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, columns in WRITTEN_IN_BULK.items():
        for column in columns:
            op.execute(
                f"UPDATE {table} SET {column} = {column} || '.000000' "
                f"WHERE {column} IS NOT NULL AND length({column}) = 19"
            )


def downgrade() -> None:
    pass  # the longer form reads back the same
