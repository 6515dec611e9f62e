"""inspector_bins.created_by: who made a bin, the one (besides admins) who may change or delete it
(hand-written)

Any editor could rewrite another team's bin script (every answer a 500) or delete it with its
captures. Bins made before this column have no owner and stay open to every editor.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inspector_bins", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_by", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inspector_bins", schema=None) as batch_op:
        batch_op.drop_column("created_by")
