"""schedules.timezone: the QHOOK_TIMEZONE a due time was computed in (hand-written)

A date field's due time is its date at the trigger's local ``at`` in QHOOK_TIMEZONE. After the
setting changed, rows already scheduled kept the old zone's time: equal dates fired an hour apart.
The scheduler now computes again, at start, the unfired rows of another zone (or of none: rows
from before this column).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.add_column(sa.Column("timezone", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_column("timezone")
