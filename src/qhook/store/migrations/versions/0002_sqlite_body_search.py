"""SQLite: the Hub's body-search index (hand-written; PostgreSQL has its trigram GIN index instead)

An FTS5 trigram index over deliveries.body, filled *behind* the writes by a background indexer
(qhook.store.search_index): inserting a delivery costs nothing extra, the indexer adds rows above
``delivery_search_state.upto`` in small batches, and a search reads the index below that mark and
scans the few newer rows. External content (the text stays only in deliveries), detail=none (no
positions: a search ANDs the needle's trigrams and re-checks LIKE on the row).

Deleting an indexed delivery (purge) removes its index entries in a trigger and keeps ``upto`` at
most the largest id left: SQLite hands a deleted top id out again, and that new row must count as
not indexed yet. Bodies never change; should one be updated, the last trigger re-indexes it.

Autogenerate leaves these objects alone (``store.migrate.include_name``). Careful: a later
batch-mode migration that rebuilds ``deliveries`` on SQLite drops its triggers; such a revision
must create them again (tests/integration/test_search_index.py checks they exist).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_INDEXED = "old.id <= (SELECT upto FROM delivery_search_state)"
_DROP_OLD = "INSERT INTO delivery_search(delivery_search, rowid, body) VALUES ('delete', old.id, old.body);"

CREATE = (
    # case_sensitive 0 folds Unicode case: a superset of LIKE's ASCII folding (LIKE decides).
    "CREATE VIRTUAL TABLE delivery_search USING fts5("
    "body, content='deliveries', content_rowid='id', tokenize='trigram case_sensitive 0', detail=none)",
    "CREATE TABLE delivery_search_state (id INTEGER PRIMARY KEY CHECK (id = 1), upto INTEGER NOT NULL)",
    "INSERT INTO delivery_search_state (id, upto) VALUES (1, 0)",
    f"CREATE TRIGGER delivery_search_delete AFTER DELETE ON deliveries WHEN {_INDEXED} BEGIN "
    f"{_DROP_OLD} "
    "UPDATE delivery_search_state SET upto = (SELECT coalesce(max(id), 0) FROM deliveries) "
    "WHERE upto > (SELECT coalesce(max(id), 0) FROM deliveries); END",
    f"CREATE TRIGGER delivery_search_update AFTER UPDATE OF body ON deliveries WHEN {_INDEXED} BEGIN "
    f"{_DROP_OLD} "
    "INSERT INTO delivery_search(rowid, body) VALUES (new.id, new.body); END",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for statement in CREATE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP TRIGGER IF EXISTS delivery_search_update")
    op.execute("DROP TRIGGER IF EXISTS delivery_search_delete")
    op.execute("DROP TABLE IF EXISTS delivery_search_state")
    op.execute("DROP TABLE IF EXISTS delivery_search")
