"""The Hub's list queries use an index for each filter on both databases (EXPLAIN on a few thousand rows).

These are the plans a million rows get too: each filter has an index that yields rows in id order
(keyset pagination stops after one page), so the planner never has to read the whole table.
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, text

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.services import hub as hub_service
from qhook.services import hub_search
from qhook.store import hub
from qhook.store.db import Tx
from qhook.store.tables import deliveries
from tests.support.hub_data import add_delivery, ensure_signal, every_page
from tests.support.plans import explain

ROWS = 6000
START = utcnow() - timedelta(days=60)
ORIGINS = [f"https://host{i}.example.com:443" for i in range(20)]


def _body(i: int) -> str:
    """About 700 bytes, like an envelope payload with a flat result."""
    values = {f"field{k}_": f"value {i * 7919 % 99991 + k}" for k in range(20)}
    return json.dumps({"type": "result.new", "data": {"batchnumber_": f"B-{i:05d}", **values}})


def _fill(ctx: AppContext) -> None:
    rows = []
    for i in range(ROWS):
        created = START + timedelta(minutes=14 * i)
        # Needles in a haystack, as people search: a rare set, endpoint and action among common ones.
        rare = i % 250
        rows.append(
            {
                "webhook_id": f"msg_{i:026d}",
                "workflow_id": i % 50,
                "signal_id": i % 100,
                "set_id": 3 if rare == 0 else 1 + i % 2,
                "result_id": i % 1000,
                "action": "date" if rare == 2 else ("new", "modified", "deleted")[i % 3],
                "url": ORIGINS[5 if rare == 1 else i % 2] + "/hook",
                "endpoint": ORIGINS[5 if rare == 1 else i % 2],
                "body": _body(i),
                "status": "failed" if i % 37 == 0 else ("pending" if i > ROWS - 20 else "succeeded"),
                "attempt_count": 1,
                "created_at": created,
                "updated_at": created,
            }
        )
    with ctx.db.transaction() as tx:
        for signal_id in range(100):  # real, active signals: replay only counts sendable rows
            ensure_signal(tx, set_id=1, workflow_id=signal_id % 50, signal_id=signal_id, now=START)
        tx.execute(insert(deliveries), rows)
    with ctx.db.transaction() as tx:
        tx.execute(text("ANALYZE"))


def _plan(tx: Tx, f: hub.DeliveryFilter, *, before_id: int | None = None) -> str:
    return explain(tx, lambda t: hub.list_deliveries(t, f, limit=51, before_id=before_id))


def _filters() -> dict[str, tuple[hub.DeliveryFilter, str]]:
    """Each filter and the index expected to serve it."""
    window = (START + timedelta(days=20), START + timedelta(days=21))
    return {
        "status": (hub.DeliveryFilter(statuses=("failed",)), "ix_deliveries_status_id"),
        "workflow_id": (hub.DeliveryFilter(workflow_id=7), "ix_deliveries_workflow_id_id"),
        "signal_id": (hub.DeliveryFilter(signal_id=42), "ix_deliveries_signal_id_id"),
        "set_id": (hub.DeliveryFilter(set_id=3), "ix_deliveries_set_id_id"),
        "result_id": (hub.DeliveryFilter(result_id=123), "ix_deliveries_result_id_id"),
        "endpoint": (hub.DeliveryFilter(endpoint=ORIGINS[5]), "ix_deliveries_endpoint_id"),
        "action": (hub.DeliveryFilter(action="date"), "ix_deliveries_action_id"),
        "since_until": (hub.DeliveryFilter(since=window[0], until=window[1]), "ix_deliveries_created_at"),
    }


@pytest.fixture
def filled(ctx: AppContext) -> AppContext:
    _fill(ctx)
    return ctx


@pytest.mark.parametrize("name", list(_filters()))
def test_each_filter_uses_its_index(filled: AppContext, name: str) -> None:
    wanted, index = _filters()[name]
    with filled.db.reading() as tx:
        first = _plan(tx, wanted)
        later = _plans_of_all(tx, wanted, before_id=ROWS // 2)[-1]  # after a time range's cursor lookup
        found = hub.list_deliveries(tx, wanted, limit=51)
    assert found, name  # the filter matches rows, so the plan is for a real page
    for plan in (first, later):
        assert index in plan, plan
        if filled.db.is_sqlite:
            assert "SCAN deliveries" not in plan, plan
        else:
            assert "Seq Scan" not in plan, plan


def test_unfiltered_page_walks_the_primary_key(filled: AppContext) -> None:
    with filled.db.reading() as tx:
        plan = _plan(tx, hub.DeliveryFilter(), before_id=ROWS // 2)
    if filled.db.is_sqlite:
        # The rowid is the primary key: a range walk from the cursor, newest first, no sort.
        assert "SEARCH deliveries USING INTEGER PRIMARY KEY" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    else:
        assert "Index Scan Backward using pk_deliveries" in plan, plan


def _plans_of_all(tx: Tx, f: hub.DeliveryFilter, before_id: int | None = None) -> list[str]:
    """The plan of every statement a list sends (a body search on SQLite sends several)."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.append((statement, parameters))

    event.listen(tx, "before_cursor_execute", capture)
    try:
        hub.list_deliveries(tx, f, limit=51, before_id=before_id)
    finally:
        event.remove(tx, "before_cursor_execute", capture)
    prefix = "EXPLAIN QUERY PLAN " if tx.dialect.name == "sqlite" else "EXPLAIN "
    return [
        "\n".join(
            str(r[-1] if tx.dialect.name == "sqlite" else r[0]) for r in tx.exec_driver_sql(prefix + s, p)
        )
        for s, p in seen
    ]


def test_body_search(filled: AppContext) -> None:
    """PostgreSQL serves q from the trigram index on the bodies' copy (delivery_search), SQLite
    from its FTS5 trigram index.

    On a few thousand rows PostgreSQL still prefers a sequential scan by cost (the whole table is
    a few hundred pages), so the test shows the index applies to the Hub's exact ILIKE by turning
    sequential scans off for the transaction; on large tables the planner picks it by itself.
    On SQLite the index is filled behind the writes (services/hub_search.py): once it has caught
    up, no statement of the search scans the deliveries.
    """
    wanted = hub.DeliveryFilter(q="B-04321")
    assert hub_search.index_new(filled, budget_s=60) == (ROWS if filled.db.is_sqlite else 0)
    with filled.db.transaction() as tx:  # SET LOCAL needs a transaction block
        found = hub.list_deliveries(tx, wanted, limit=51)
        if not filled.db.is_sqlite:
            # And plain index scans: a walk down delivery_search's primary key testing ILIKE is
            # the other way there (the one a common needle takes at any size).
            tx.execute(text("SET LOCAL enable_seqscan = off"))
            tx.execute(text("SET LOCAL enable_indexscan = off"))
        plans = _plans_of_all(tx, wanted)
    assert [d.id for d in found] == [4322]
    if filled.db.is_sqlite:
        joined = "\n".join(plans)
        assert "SCAN delivery_search VIRTUAL TABLE INDEX" in joined, plans
        assert "SCAN deliveries" not in joined, plans
        # The rows the indexer has not reached yet (none here): a primary-key range, newest first.
        assert "SEARCH deliveries USING INTEGER PRIMARY KEY (rowid>?)" in joined, plans
        # With another filter, or since/until (pages in time order): the index's candidates are
        # looked up by key, never through the other filter's index or created_at's.
        since, until = START + timedelta(days=20), START + timedelta(days=50)
        for other in (replace(wanted, statuses=("succeeded",)), replace(wanted, since=since, until=until)):
            with filled.db.reading() as tx:
                assert [d.id for d in hub.list_deliveries(tx, other, limit=51)] == [4322]
                candidates_fetch = next(p for p in _plans_of_all(tx, other) if "json_each" in p)
            assert candidates_fetch.startswith("SEARCH deliveries USING INTEGER PRIMARY KEY (rowid=?)"), plans
            assert "ix_deliveries" not in candidates_fetch, candidates_fetch
        # Shorter than a trigram: the LIKE scan, newest first, stopping after one page.
        short = hub.DeliveryFilter(q="B-")
        with filled.db.reading() as tx:
            assert _plan(tx, short).splitlines() == ["SCAN deliveries"]
            assert len(hub.list_deliveries(tx, short, limit=51)) == 51
    else:
        # The bodies' copy (migration 0003) is searched; deliveries itself has no body index.
        assert len(plans) == 1 and "Bitmap Index Scan on ix_delivery_search_body_trgm" in plans[0], plans
        # With since/until: in time order, and the trigram index applies too (at 1,000,000 rows
        # the planner takes it for a rare needle and walks created_at for a common one by itself,
        # bench/results/hub.json); never a scan of either table.
        timed = replace(wanted, since=START + timedelta(days=20), until=START + timedelta(days=50))
        with filled.db.transaction() as tx:
            assert [d.id for d in hub.list_deliveries(tx, timed, limit=51)] == [4322]
            tx.execute(text("SET LOCAL enable_seqscan = off"))
            tx.execute(text("SET LOCAL enable_indexscan = off"))
            plan = _plan(tx, timed)
        assert "Bitmap Index Scan on ix_delivery_search_body_trgm" in plan, plan
        assert "Sort Key: deliveries.created_at DESC, deliveries.id DESC" in plan, plan


def test_replay_and_purge_use_indexes(filled: AppContext) -> None:
    """Replay counts by the same filters; purge walks created_at."""
    replayable = hub_service.to_store(hub_service.Filters(status="failed", workflow_id=7))
    cutoff = utcnow() - timedelta(days=30)
    with filled.db.reading() as tx:
        assert hub.count_replayable(tx, replayable) > 0
        plans = [
            explain(tx, lambda t: hub.count_replayable(t, replayable)),
            explain(tx, lambda t: hub.count_purgeable(t, "succeeded", cutoff)),
        ]
    for plan in plans:
        if filled.db.is_sqlite:
            assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
            assert "SCAN deliveries" not in plan, plan
        else:
            assert "Seq Scan on deliveries" not in plan, plan


def _windows() -> dict[str, tuple[Any, Any]]:
    return {
        "one day": (START + timedelta(days=20), START + timedelta(days=21)),
        "since only": (START + timedelta(days=55), None),
        "until only": (None, START + timedelta(days=3)),
    }


@pytest.mark.parametrize("name", list(_windows()))
def test_time_range_walks_the_created_at_index_newest_first(filled: AppContext, name: str) -> None:
    """since/until: one walk down the created_at index, stopping after a page, wherever the window
    lies and however wide; never the window's rows sorted, nor a primary-key walk past later rows."""
    since, until = _windows()[name]
    wanted = hub.DeliveryFilter(since=since, until=until)
    with filled.db.reading() as tx:
        # A later page looks up its cursor row's time first, then walks from there.
        plans = [_plan(tx, wanted), _plans_of_all(tx, wanted, before_id=ROWS // 2)[-1]]
    for plan in plans:
        if filled.db.is_sqlite:
            # The index ends in the rowid, so it yields (created_at, id) order: no sort.
            assert "SEARCH deliveries USING INDEX ix_deliveries_created_at" in plan, plan
            assert "TEMP B-TREE" not in plan and "SCAN deliveries" not in plan, plan
        else:
            # Equal times are put in id order as they come: at 1,000,000 rows an incremental sort
            # (bench/results/hub.json); here a window of ~100 rows may get a plain one.
            assert "Index Scan Backward using ix_deliveries_created_at" in plan, plan
            assert "Seq Scan" not in plan, plan


_pages = functools.partial(every_page, size=51)  # whole result, page by page


@pytest.mark.parametrize("name", list(_windows()))
def test_time_range_pages_are_exactly_the_window_newest_first(filled: AppContext, name: str) -> None:
    since, until = _windows()[name]
    wanted = hub.DeliveryFilter(since=since, until=until)
    with filled.db.reading() as tx:
        stamps = {d.id: d.created_at for d in hub.list_deliveries(tx, hub.DeliveryFilter(), limit=ROWS + 1)}
        expected = sorted(
            (
                i
                for i, at in stamps.items()
                if (since is None or at >= since) and (until is None or at < until)
            ),
            key=lambda i: (stamps[i], i),
            reverse=True,
        )
        seen = _pages(tx, wanted)
    assert expected and seen == expected


def test_time_range_orders_by_time_when_ids_do_not(ctx: AppContext) -> None:
    """Rows written out of time order (and equal times): pages follow (created_at, id), exactly,
    also with a body search."""
    base = utcnow() - timedelta(days=2)
    offsets = [5, 1, 9, 3, 3, 7, 0, 8, 3, 6, 2, 4, 11, 10]  # minutes; three rows share minute 3
    made = {
        add_delivery(
            ctx.db,
            status="succeeded",
            body=f'{{"batch": "T-{m:02d}"}}',
            created_at=base + timedelta(minutes=m),
        ): base + timedelta(minutes=m)
        for m in offsets
    }
    window = hub.DeliveryFilter(since=base + timedelta(minutes=1), until=base + timedelta(minutes=11))
    expected = sorted(
        (i for i, at in made.items() if window.since <= at < window.until), key=lambda i: (made[i], i)
    )
    expected.reverse()
    assert hub_search.index_new(ctx) == (len(offsets) if ctx.db.is_sqlite else 0)
    with ctx.db.reading() as tx:
        assert _pages(tx, window, size=3) == expected
        assert _pages(tx, replace(window, q='"batch": "T-'), size=4) == expected
        assert _pages(tx, replace(window, q="T-03"), size=2) == [
            i for i in expected if made[i] == base + timedelta(minutes=3)
        ]


def test_time_range_pages_on_after_the_cursor_row_is_purged(filled: AppContext) -> None:
    """The cursor names a row; gone meanwhile, the next lower id's time stands in for its time
    (exact while times follow ids, as they do within seconds when written)."""
    since, until = _windows()["one day"]
    wanted = hub.DeliveryFilter(since=since, until=until)
    with filled.db.reading() as tx:
        expected = _pages(tx, wanted)
        first = hub.list_deliveries(tx, wanted, limit=10)
    with filled.db.transaction() as tx:
        tx.execute(deliveries.delete().where(deliveries.c.id == first[-1].id))
    with filled.db.reading() as tx:
        rest = hub.list_deliveries(tx, wanted, limit=len(expected), before_id=first[-1].id)
    assert [d.id for d in first] + [d.id for d in rest] == expected
