"""SQLite's body-search index, filled behind the writes (store/search_index.py, services/hub_search.py).

On both databases: a search answers exactly what the plain LIKE/ILIKE scan answers, before the
indexer ran, half way and after; on SQLite the index catches up, purge takes entries out, and a
reused id is never answered by an old body.
"""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import replace

import pytest
from sqlalchemy import text

from qhook.context import AppContext
from qhook.services import hub as hub_service
from qhook.services import hub_search
from qhook.store import hub, search_index
from qhook.store.db import Tx
from qhook.store.tables import deliveries
from tests.support.hub_data import add_delivery, days_ago, every_page

NEEDLES = ["B-0042", "b-004", "Vries", "de vries", "Zürich", "ZÜRICH", '"note"', "ship", "x_y", "9%"]


def _body(i: int) -> str:
    city = "Zürich" if i % 7 == 0 else "Delft"
    note = "released for shipment" if i % 3 else "held x_y 9%"
    return json.dumps(
        {"batchnumber_": f"B-{i:04d}", "operator_": "Anna de Vries", "city": city, "note": note}
    )


def _fill(ctx: AppContext, count: int) -> list[int]:
    return [
        add_delivery(
            ctx.db,
            status="failed" if i % 5 == 0 else "succeeded",
            set_id=1 + i % 2,
            body=_body(i),
            created_at=days_ago(10 - i / 20),
        )
        for i in range(count)
    ]


def _scan(tx: Tx, f: hub.DeliveryFilter) -> list[int]:
    """Every page of the plain scan (the query the Hub ran before the index): the reference."""
    seen: list[int] = []
    before: int | None = None
    while True:
        page = [r.id for r in tx.execute(hub.list_query(tx, f, limit=7, before_id=before))]
        seen += page
        if len(page) < 7:
            return seen
        before = page[-1]


_search = functools.partial(every_page, size=7)  # whole result, page by page


def _filters() -> list[hub.DeliveryFilter]:
    found = []
    for q in NEEDLES:
        plain = hub.DeliveryFilter(q=q)
        found += [plain, replace(plain, statuses=("failed",)), replace(plain, set_id=2)]
        found.append(replace(plain, since=days_ago(8), until=days_ago(5)))
    return found


def _same_as_the_scan(ctx: AppContext) -> None:
    with ctx.db.reading() as tx:
        for f in _filters():
            assert _search(tx, f) == _scan(tx, f), f


def test_search_is_exact_before_during_and_after_indexing(ctx: AppContext) -> None:
    made = _fill(ctx, 120)
    _same_as_the_scan(ctx)  # nothing indexed yet: the rows above the mark are scanned
    if ctx.db.is_sqlite:
        assert hub_search.unindexed(ctx) == 120
        assert hub_search.index_new(ctx, batch=50, budget_s=0) == 50  # one batch per round
        assert hub_search.unindexed(ctx) == 70
        _same_as_the_scan(ctx)  # half in the index, half scanned, pages across the mark
        assert hub_search.index_new(ctx, batch=50) == 70
    assert hub_search.unindexed(ctx) == 0
    assert hub_search.index_new(ctx) == 0
    _same_as_the_scan(ctx)
    found, _ = hub_service.list_deliveries(ctx, hub_service.Filters(q="B-0042"), limit=5)
    assert [d.id for d in found] == [made[42]]
    if ctx.db.is_sqlite:
        with ctx.db.reading() as tx:
            # The index itself names the rows (not the scan): 42 and nothing else has B-0042.
            assert search_index.candidates(tx, "B-0042", below=10**9, limit=10) == [made[42]]
            _integrity_check(tx)


def test_common_needle_with_a_rare_filter_falls_back_to_the_filter_index(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the candidate budget the search walks the other filter's index with LIKE: same rows."""
    _fill(ctx, 120)
    hub_search.index_new(ctx)
    monkeypatch.setattr(hub, "SEARCH_ROUND", 4)
    monkeypatch.setattr(hub, "SEARCH_CANDIDATES", 30)
    monkeypatch.setattr(hub, "SEARCH_TIMED_CANDIDATES", 10)
    _same_as_the_scan(ctx)


def test_purge_takes_index_entries_out_and_reused_ids_are_found(ctx: AppContext) -> None:
    old = [
        add_delivery(
            ctx.db, status="succeeded", body=json.dumps({"batch": f"OLD-{i}"}), created_at=days_ago(40)
        )
        for i in range(30)
    ]
    kept = add_delivery(ctx.db, status="succeeded", body=json.dumps({"batch": "OLD-kept"}))
    assert hub_search.index_new(ctx) == (31 if ctx.db.is_sqlite else 0)
    with ctx.db.reading() as tx:
        assert _search(tx, hub.DeliveryFilter(q="OLD-")) == [kept, *old[::-1]]
    assert hub_service.purge(ctx, batch=7).deliveries["succeeded"] == 30
    with ctx.db.reading() as tx:
        assert _search(tx, hub.DeliveryFilter(q="OLD-")) == [kept]
        if ctx.db.is_sqlite:
            assert search_index.candidates(tx, "OLD-", below=10**9, limit=50) == [kept]
            _integrity_check(tx)
    # The newest row goes and SQLite hands its id out again: the new row is not indexed yet, and
    # the mark came down so the search scans it instead of trusting the old entries.
    with ctx.db.transaction() as tx:
        tx.execute(deliveries.delete().where(deliveries.c.id == kept))
    reused = add_delivery(ctx.db, body=json.dumps({"batch": "NEW-1"}))
    with ctx.db.reading() as tx:
        assert _search(tx, hub.DeliveryFilter(q="OLD-kept")) == []
        assert _search(tx, hub.DeliveryFilter(q="NEW-1")) == [reused]
    if ctx.db.is_sqlite:
        assert reused <= kept and hub_search.unindexed(ctx) == 1  # an id at or under the old mark
        assert hub_search.index_new(ctx) == 1
        with ctx.db.reading() as tx:
            assert _search(tx, hub.DeliveryFilter(q="NEW-1")) == [reused]
            assert search_index.candidates(tx, "OLD-kept", below=10**9, limit=5) == []
            _integrity_check(tx)


def test_index_objects_exist_on_sqlite_only(ctx: AppContext) -> None:
    """A batch migration that rebuilds deliveries would drop the triggers: this test notices."""
    with ctx.db.reading() as tx:
        if ctx.db.is_sqlite:
            names = set(tx.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars())
            assert {"delivery_search_delete", "delivery_search_update"} <= names
            assert search_index.indexed_upto(tx) == 0
        else:
            assert tx.execute(text("SELECT to_regclass('delivery_search_state')")).scalar() is None


def test_short_needles_scan_and_find(ctx: AppContext) -> None:
    """Shorter than a trigram: the index cannot help; the scan answers."""
    made = _fill(ctx, 12)
    hub_search.index_new(ctx)
    with ctx.db.reading() as tx:
        assert not search_index.usable(tx, "9%")
        assert _search(tx, hub.DeliveryFilter(q="9%")) == [i for n, i in enumerate(made) if n % 3 == 0][::-1]


def _integrity_check(tx: Tx) -> None:
    """FTS5 compares the whole index with the content table (rank 1); raises when they differ."""
    tx.execute(text("INSERT INTO delivery_search(delivery_search, rank) VALUES ('integrity-check', 1)"))


async def test_the_background_loop_catches_up(ctx: AppContext) -> None:
    """The loop ``qhook serve`` runs: new deliveries land in the index within its interval."""
    stop = asyncio.Event()
    loop = asyncio.create_task(hub_search.run_indexer(ctx, stop))
    try:
        made = _fill(ctx, 30)
        for _ in range(100):
            if hub_search.unindexed(ctx) == 0:
                break
            await asyncio.sleep(0.05)
        assert hub_search.unindexed(ctx) == 0
        if ctx.db.is_sqlite:
            with ctx.db.reading() as tx:
                assert search_index.candidates(tx, "B-0017", below=10**9, limit=5) == [made[17]]
    finally:
        stop.set()
        await asyncio.wait_for(loop, 5)


def test_statistics_of_the_index_tables_are_dropped(ctx: AppContext) -> None:
    """A full ANALYZE taken on the empty index misleads FTS5 later (merges 3-10x slower): the
    indexer drops those statistics; the deliveries' own stay."""
    _fill(ctx, 5)
    with ctx.db.transaction() as tx:
        tx.execute(text("ANALYZE"))
    hub_search.index_new(ctx)
    if ctx.db.is_sqlite:
        with ctx.db.reading() as tx:
            tables = set(tx.execute(text("SELECT tbl FROM sqlite_stat1")).scalars())
        assert "deliveries" in tables and not {t for t in tables if t.startswith("delivery_search")}
        with ctx.db.transaction() as tx:
            assert not search_index.forget_statistics(tx)  # nothing left to drop
