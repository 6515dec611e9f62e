"""The Hub's body search reads delivery_search on PostgreSQL (migration 0003): every way a delivery
is written puts its body there, purge takes it out, a changed body is changed there too, and
upgrading a database with deliveries copies them in (downgrade restores the old index).

On SQLite the same calls must answer the same (its index is 0002's, tests/.../test_search_index.py).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from alembic import command
from sqlalchemy import event, select, text, update

from qhook.context import AppContext
from qhook.services import fanout, hub_search
from qhook.services import hub as hub_service
from qhook.store import hub as hub_store
from qhook.store import migrate
from qhook.store.db import Database
from qhook.store.tables import deliveries
from tests.support.hub_data import add_delivery, days_ago
from tests.support.workflows import RECEIVER, add_result, make_set, make_workflow

FIELDS = [{"name": "batchnumber_", "type": "text", "required": True}, {"name": "note_", "type": "text"}]


def _search(ctx: AppContext, q: str, **filters: Any) -> list[int]:
    hub_search.index_new(ctx, budget_s=60)  # SQLite's indexer; nothing on PostgreSQL
    found, _ = hub_service.list_deliveries(ctx, hub_service.Filters(q=q, **filters), limit=100)
    return [d.id for d in found]


def _ids_with(ctx: AppContext, needle: str) -> list[int]:
    """The deliveries whose body holds ``needle`` (read from deliveries itself), newest first."""
    with ctx.db.reading() as tx:
        rows = tx.execute(select(deliveries.c.id, deliveries.c.body).order_by(deliveries.c.id.desc()))
        return [i for i, body in rows if needle in body]


def _copies(db: Database) -> dict[int, str]:
    """PostgreSQL's search rows by delivery id."""
    with db.reading() as tx:
        return dict(tx.execute(text("SELECT id, body FROM delivery_search")).all())


def _bodies(db: Database) -> dict[int, str]:
    with db.reading() as tx:
        return dict(tx.execute(select(deliveries.c.id, deliveries.c.body)).all())


async def test_fan_out_and_store_results_deliveries_are_found(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    set_id = await make_set(api, "searchable", FIELDS)
    await make_workflow(
        api,
        set_id,
        triggers={"entry": True, "modification": {}},
        signals=[
            {"type": "webhook", "url": RECEIVER, "subject": "Batch {{ batchnumber_ }}"},
            {"type": "webhook", "url": RECEIVER + "/2", "payload": "result"},
        ],
    )
    # One result through the API: the fan-out writes its deliveries one statement each.
    await add_result(api, set_id, batchnumber_="SRCH-ONE", note_="single")
    one = _ids_with(ctx, "SRCH-ONE")
    assert len(one) == 2
    # storeResults without chained signals: the batch path's executemany of many rows.
    with ctx.db.reading() as tx:
        assert fanout.can_batch(tx, set_id)
    items = [{"batchnumber_": f"SRCH-BULK-{i:02d}", "note_": "Bulk Note"} for i in range(12)]
    response = await api.post("/api/storeResults", data={"setId": str(set_id), "results": json.dumps(items)})
    assert response.status_code == 200, response.text
    bulk = _ids_with(ctx, "SRCH-BULK-")
    assert len(bulk) == 24
    assert _search(ctx, "srch-one") == one
    assert _search(ctx, "SRCH-BULK-") == bulk
    assert _search(ctx, "SRCH-BULK-07") == _ids_with(ctx, "SRCH-BULK-07") != []
    assert _search(ctx, "bulk note") == bulk  # case-insensitive, as before
    assert _search(ctx, "SRCH") == bulk + one
    # The worker's lease and outcome updates leave the copies alone (and findable).
    with ctx.db.transaction() as tx:
        tx.execute(update(deliveries).values(status="succeeded", attempt_count=1, lease_owner=None))
    assert _search(ctx, "SRCH", status="succeeded") == bulk + one
    if not ctx.db.is_sqlite:
        assert _copies(ctx.db) == _bodies(ctx.db)


def test_purge_removes_the_search_rows(ctx: AppContext) -> None:
    old = [
        add_delivery(
            ctx.db, status="succeeded", body=json.dumps({"lot": f"PRG-{i}"}), created_at=days_ago(40)
        )
        for i in range(9)
    ]
    kept = add_delivery(ctx.db, status="succeeded", body=json.dumps({"lot": "PRG-kept"}))
    assert _search(ctx, "PRG-") == [kept, *old[::-1]]
    assert hub_service.purge(ctx, batch=4).deliveries["succeeded"] == 9
    assert _search(ctx, "PRG-") == [kept]
    if not ctx.db.is_sqlite:
        assert set(_copies(ctx.db)) == {kept}


def test_a_changed_body_is_searched_as_changed(ctx: AppContext) -> None:
    """Bodies are frozen in practice; should one change, the search follows it exactly."""
    changed = add_delivery(ctx.db, body=json.dumps({"lot": "CHG-before"}))
    other = add_delivery(ctx.db, body=json.dumps({"lot": "CHG-other"}))
    with ctx.db.transaction() as tx:
        tx.execute(update(deliveries).where(deliveries.c.id == changed).values(body='{"lot": "CHG-after"}'))
    assert _search(ctx, "CHG-before") == []
    assert _search(ctx, "chg-after") == [changed]
    assert _search(ctx, "CHG-") == [other, changed]
    if not ctx.db.is_sqlite:
        assert _copies(ctx.db) == _bodies(ctx.db)


def _objects(db: Database) -> dict[str, Any]:
    """What 0003 adds and removes, as the database has it."""
    with db.reading() as tx:
        if db.is_sqlite:
            index = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'ix_deliveries_body_trgm'"
            return {"old_index": tx.execute(text(index)).first() is not None}
        return {
            "old_index": tx.execute(text("SELECT to_regclass('ix_deliveries_body_trgm')")).scalar()
            is not None,
            "table": tx.execute(text("SELECT to_regclass('delivery_search')")).scalar() is not None,
            "triggers": sorted(
                tx.execute(
                    text("SELECT tgname FROM pg_trigger WHERE tgname LIKE 'delivery_search%' ORDER BY tgname")
                ).scalars()
            ),
        }


def test_upgrade_copies_existing_deliveries_and_downgrade_restores_the_index(ctx: AppContext) -> None:
    config = migrate.alembic_config(ctx.db)
    after = _objects(ctx.db)
    command.downgrade(config, "0002")
    before = _objects(ctx.db)
    if ctx.db.is_sqlite:
        assert before == {"old_index": True} and after == {"old_index": False}
    else:
        assert before == {"old_index": True, "table": False, "triggers": []}
        assert after == {
            "old_index": False,
            "table": True,
            "triggers": ["delivery_search_insert", "delivery_search_update"],
        }
    # Deliveries written at 0002 (no triggers): the upgrade must copy them.
    made = [add_delivery(ctx.db, body=json.dumps({"lot": f"MIG-{i}", "n": "Ünïcode"})) for i in range(5)]
    assert migrate.current_revision(ctx.db) == "0002"
    migrate.upgrade(ctx.db)
    assert migrate.is_current(ctx.db) and _objects(ctx.db) == after
    assert _search(ctx, "MIG-") == made[::-1]
    assert _search(ctx, "MIG-3") == [made[3]]
    newer = add_delivery(ctx.db, body=json.dumps({"lot": "MIG-new"}))
    assert _search(ctx, "MIG-") == [newer, *made[::-1]]
    if not ctx.db.is_sqlite:
        assert _copies(ctx.db) == _bodies(ctx.db)
    # Down again: the old index is back, nothing of 0003 is left, deliveries can still be written.
    command.downgrade(config, "0002")
    assert _objects(ctx.db) == before
    later = add_delivery(ctx.db, body=json.dumps({"lot": "MIG-later"}))
    with ctx.db.reading() as tx:
        assert tx.execute(select(deliveries.c.id).where(deliveries.c.id == later)).scalar() == later
    migrate.upgrade(ctx.db)
    assert _search(ctx, "MIG-later") == [later]


def test_repeated_searches_stay_exact_and_plan_for_their_needle(ctx: AppContext) -> None:
    """The same search run past psycopg's prepare threshold answers the same; on PostgreSQL every
    value is in the SQL text, so a prepared statement is never planned for "any needle and window"
    (that generic plan walked a 30-day window probing every row for a rare one: 190 ms at 1M rows)."""
    rare = add_delivery(ctx.db, body=json.dumps({"lot": "REP-0001", "q": "it's 100% \\temp"}))
    common = [add_delivery(ctx.db, body=json.dumps({"lot": f"REP-{i:04d}x"})) for i in range(2, 8)]
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.append((statement, parameters))

    window = {"since": days_ago(1), "until": days_ago(-1)}
    for _ in range(12):
        assert _search(ctx, "rep-0001", **window) == [rare]
        assert _search(ctx, "it's 100% \\\\temp", **window) == [rare]  # JSON doubled the backslash
        assert _search(ctx, "REP-", **window) == [*common[::-1], rare]
    if not ctx.db.is_sqlite:
        with ctx.db.reading() as tx:
            event.listen(tx, "before_cursor_execute", capture)
            timed = hub_store.DeliveryFilter(q="REP-0001", **window)
            hub_store.list_deliveries(tx, timed, limit=5, before_id=common[-1])
        searches = [(s, p) for s, p in seen if "ILIKE '%%REP-0001%%'" in s]
        assert len(searches) == 1 and not searches[0][1], seen
