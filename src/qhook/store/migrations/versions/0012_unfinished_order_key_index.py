"""ix_deliveries_order_key becomes ix_deliveries_unfinished_order_key, partial (hand-written)

Only what an ordered delivery can wait for is indexed: rows with an order key that are not
finished. Unordered deliveries (no key) and finished ones no longer write to it, and the claim's
check of earlier unfinished rows of a key has an index keyed by it even under statistics that
say every key is NULL (PostgreSQL took the endpoint's unfinished index and read every earlier
row for each ordered candidate).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Written out: a migration keeps the text it was made with, whatever tables.py says later.
ORDERED_UNFINISHED_SQL = "order_key IS NOT NULL AND status IN ('pending', 'retrying', 'held')"


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_unfinished_order_key",
        "deliveries",
        ["order_key", "id"],
        postgresql_where=sa.text(ORDERED_UNFINISHED_SQL),
        sqlite_where=sa.text(ORDERED_UNFINISHED_SQL),
    )
    op.drop_index("ix_deliveries_order_key", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_order_key", "deliveries", ["order_key", "id"])
    op.drop_index("ix_deliveries_unfinished_order_key", table_name="deliveries")
