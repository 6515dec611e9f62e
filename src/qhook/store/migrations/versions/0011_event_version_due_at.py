"""events.result_version and events.due_at (hand-written)

``result_version``: the version of the result an event shows. Webhook bodies carry it so that a
receiver can keep, per result, the newest body it was sent: without ``ordered``, a retry of an
older change can arrive after a newer one.

``due_at``: for a ``date`` event, the due time that came due (the event's ``occurred_at`` is when
the scheduler fired it, later after downtime). ``date`` bodies carry it.

Events made before these columns have neither; their bodies were rendered (and are re-sent)
without them.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from qhook.store.types import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("result_version", sa.Integer(), nullable=True))
    op.add_column("events", sa.Column("due_at", UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("events", "due_at")
    op.drop_column("events", "result_version")
