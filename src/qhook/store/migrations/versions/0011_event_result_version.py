"""events.result_version: the version of the result an event shows (hand-written)

Webhook bodies carry it so that a receiver can keep, per result, the newest body it was sent:
without ``ordered``, a retry of an older change can arrive after a newer one. Events made before
this column have none; their bodies were rendered (and are re-sent) without it.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("result_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("events", "result_version")
