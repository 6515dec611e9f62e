"""SQLite's index for the Hub's body search, filled behind the writes (migration 0002).

An FTS5 trigram index (detail=none) over ``deliveries.body``. Tokenizing a body costs ~45 us of
CPU even in batches (a trigger per row, with positions, cost more: storeResults ingest fell from
~3,040 to ~660 results/s), so nothing indexes a delivery as it is written: a background indexer
adds the rows above ``delivery_search_state.upto`` in small batches, oldest first. Bodies never
change after insert, so a row indexed once stays right; deleting one removes its entries (a
trigger).

A search reads the index for ids <= upto and scans the rows above it (seconds of deliveries when
the indexer keeps up). The index only narrows: a row has every trigram of the needle somewhere
(its case folding is Unicode-wide, a superset of LIKE's ASCII folding), and the caller's LIKE on
the row decides, so results are exactly those of the plain scan. A needle shorter than a trigram
cannot use the index and keeps the scan.

PostgreSQL serves the same search from its own delivery_search table (a copy of each body kept by
triggers, with a pg_trgm GIN index; migration 0003); nothing here runs there.
"""

from __future__ import annotations

from sqlalchemy import text

from qhook.store.db import Tx

MIN_CHARS = 3  # one trigram
MAX_TRIGRAMS = 12  # a long needle ANDs a spread of its trigrams; LIKE re-checks the rest


def usable(tx: Tx, q: str | None) -> bool:
    """Whether ``q`` can be searched through the index on this database."""
    return tx.dialect.name == "sqlite" and q is not None and len(q) >= MIN_CHARS


def match_expression(q: str) -> str:
    """An FTS5 query for rows holding every trigram of ``q`` (each one quoted: nothing is syntax).

    Each 3-character window of ``q`` goes to the index as its own string, so FTS5 folds case and
    cuts trigrams exactly as it did for the bodies. detail=none keeps no positions, so this is an
    AND of trigrams rather than a phrase; the caller's LIKE re-check keeps only true substrings.
    """
    grams = list(dict.fromkeys(q[i : i + 3] for i in range(len(q) - 2)))
    if len(grams) > MAX_TRIGRAMS:
        step = (len(grams) - 1) / (MAX_TRIGRAMS - 1)
        grams = [grams[round(k * step)] for k in range(MAX_TRIGRAMS)]
    return " AND ".join('"' + gram.replace('"', '""') + '"' for gram in grams)


def indexed_upto(tx: Tx) -> int:
    """Every delivery with an id up to this one is in the index; the ones above are not yet."""
    return int(tx.execute(text("SELECT upto FROM delivery_search_state")).scalar_one())


def candidates(tx: Tx, q: str, *, below: int, limit: int) -> list[int]:
    """Up to ``limit`` ids under ``below`` whose body may hold ``q``, newest first.

    FTS5 walks its doclists in descending rowid from ``below`` and stops at the limit.
    """
    rows = tx.execute(
        text(
            "SELECT rowid FROM delivery_search WHERE delivery_search MATCH :match AND rowid < :below "
            "ORDER BY rowid DESC LIMIT :limit"
        ),
        {"match": match_expression(q), "below": below, "limit": limit},
    )
    return [int(i) for i in rows.scalars()]


def index_batch(tx: Tx, *, batch: int) -> int:
    """Index up to ``batch`` deliveries above the mark, oldest first; how many were added.

    Run in a write transaction: on SQLite no delivery can be inserted meanwhile, so every id up to
    the new mark is in the index when it commits.
    """
    upto = indexed_upto(tx)
    last = tx.execute(
        text("SELECT max(id) FROM (SELECT id FROM deliveries WHERE id > :upto ORDER BY id LIMIT :batch)"),
        {"upto": upto, "batch": batch},
    ).scalar_one()
    if last is None:
        return 0
    added = tx.execute(
        text(
            "INSERT INTO delivery_search (rowid, body) "
            "SELECT id, body FROM deliveries WHERE id > :upto AND id <= :last"
        ),
        {"upto": upto, "last": last},
    ).rowcount
    tx.execute(text("UPDATE delivery_search_state SET upto = :last"), {"last": last})
    return int(added)


def forget_statistics(tx: Tx) -> bool:
    """Drop planner statistics on the index's own tables, if a full ANALYZE left some.

    Taken while the index was small (an ANALYZE of the whole database at start, as ``qhook``
    itself never runs: the worker analyses ``deliveries`` only), they mislead FTS5's internal
    statements as the index grows: indexing cost 3-10x more per row, with merges holding the
    write lock for seconds (bench hub at 1,000,000 rows: 504 us per row, a batch up to 2.6 s).
    Without statistics SQLite's defaults serve them well. Creating and dropping a table makes
    the other connections reload their statistics; ANALYZE sqlite_schema this one.
    """
    stat_table = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_stat1'"
    if tx.execute(text(stat_table)).first() is None:
        return False
    ours = "FROM sqlite_stat1 WHERE tbl LIKE 'delivery\\_search%' ESCAPE '\\'"
    if tx.execute(text(f"SELECT 1 {ours} LIMIT 1")).first() is None:
        return False
    tx.execute(text(f"DELETE {ours}"))
    tx.execute(text("CREATE TABLE delivery_search_reload (x INTEGER)"))
    tx.execute(text("DROP TABLE delivery_search_reload"))
    tx.execute(text("ANALYZE sqlite_schema"))  # and this one, which changed the schema itself
    return True


def unindexed(tx: Tx) -> int:
    """Deliveries not in the index yet (a primary-key range count)."""
    return int(
        tx.execute(
            text("SELECT count(*) FROM deliveries WHERE id > (SELECT upto FROM delivery_search_state)")
        ).scalar_one()
    )
