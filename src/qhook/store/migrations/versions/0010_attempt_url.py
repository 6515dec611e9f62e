"""attempts.url: where an attempt was sent; deliveries.probe_failures (hand-written)

A delivery follows its signal when the signal's URL is changed (unfinished ones at once, finished
ones when redelivered or replayed), so the delivery's URL alone no longer says where each earlier
attempt went. Attempts made before this column show their delivery's URL.

A failed probe of an open circuit is an attempt that uses up none of the delivery's
max_attempts: deliveries count them apart.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("url", sa.Text(), nullable=True))
    # A plain ADD COLUMN on both databases: batch mode rebuilt SQLite's deliveries table, copying
    # every row and dropping the body-search triggers on it.
    op.add_column(
        "deliveries", sa.Column("probe_failures", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )


def downgrade() -> None:
    op.drop_column("deliveries", "probe_failures")  # not batch: it dropped the triggers on deliveries
    op.drop_column("attempts", "url")
