"""definitions_state: the version of every set's fields and workflows (hand-written)

One row, bumped in the same transaction as any change to a set's fields or a workflow and its
signals. Each process keeps the definitions it read (store/definitions.py) and reads this one row
per transaction instead of the set, its fields, its workflows and their signals: three statements
fewer per result written, and none of their rows decoded and parsed again.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "definitions_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_definitions_state")),
    )
    op.bulk_insert(table, [{"id": 1, "version": 1}])


def downgrade() -> None:
    op.drop_table("definitions_state")
