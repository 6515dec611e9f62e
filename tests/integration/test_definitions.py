"""Set definitions and workflow plans shared across transactions stay exactly as current as reading
them anew: two Database objects on one database stand for two processes with their own copies."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from sqlalchemy import event, select

from qhook.context import AppContext
from qhook.services import fanout, results, workflows
from qhook.services import sets as sets_service
from qhook.store import queue
from qhook.store.db import Database
from qhook.store.tables import deliveries, events

FIELDS = [
    {"name": "batch_", "type": "text", "required": True},
    {"name": "status_", "type": "list", "options": ["draft", "released"]},
]


def _workflow(set_id: int, wanted: str) -> dict[str, object]:
    return {
        "name": "to ERP",
        "set_id": set_id,
        "triggers": {"entry": True},
        "filter": {"field": "status_", "op": "eq", "value": wanted},
        "signals": [{"type": "webhook", "url": "http://127.0.0.1:9/hook"}],
    }


@pytest.fixture
def other(ctx: AppContext) -> Iterator[AppContext]:
    """A second process's view of the same database (its own engine, its own shared copy)."""
    db = Database(ctx.settings.database_url)
    yield dataclasses.replace(ctx, db=db)
    db.dispose()


def _fired(ctx: AppContext, set_id: int, status: str) -> bool:
    _, created = results.create_result(
        ctx, set_id=set_id, values={"batch_": "B-1", "status_": status}, actor="t"
    )
    with ctx.db.reading() as tx:
        found = tx.execute(select(events.c.evaluations).where(events.c.result_id == created.id)).scalar_one()
    return bool(found and found[0]["fired"])


def test_a_change_in_one_process_reaches_the_next_write_in_another(
    ctx: AppContext, other: AppContext
) -> None:
    found = sets_service.create_set(ctx.db, name="Batches", fields=FIELDS, actor="t")
    workflow, _ = workflows.create_workflow(ctx, _workflow(found.id, "released"), actor="t")
    assert _fired(other, found.id, "released")  # the other process now holds the plan
    assert not _fired(other, found.id, "draft")

    workflows.update_workflow(
        ctx, workflow.id, {"filter": {"field": "status_", "op": "eq", "value": "draft"}}, actor="t"
    )
    assert _fired(other, found.id, "draft")
    assert not _fired(other, found.id, "released")

    sets_service.update_set(ctx, found.id, fields=[*FIELDS, {"name": "ph_", "type": "number"}], actor="t")
    _, created = results.create_result(
        other, set_id=found.id, values={"batch_": "B-2", "ph_": 6.8}, actor="t"
    )
    assert created.values["ph_"] == 6.8  # the new field is known at once in the other process


def test_a_current_copy_reads_no_definition_rows(ctx: AppContext, other: AppContext) -> None:
    found = sets_service.create_set(ctx.db, name="Batches", fields=FIELDS, actor="t")
    workflows.create_workflow(ctx, _workflow(found.id, "released"), actor="t")
    assert _fired(other, found.id, "released")
    seen: list[str] = []
    event.listen(other.db.engine, "before_cursor_execute", lambda c, cur, stmt, *a: seen.append(stmt))
    assert _fired(other, found.id, "released")
    read = " ".join(seen)
    for table in ("FROM sets", "FROM fields", "FROM workflows", "FROM signals"):
        assert table not in read
    assert "FROM definitions_state" in read
    # No chained signal: the event went in with its evaluations, no UPDATE after the deliveries.
    assert "UPDATE events" not in read


def test_an_uncommitted_change_is_seen_only_by_its_transaction(ctx: AppContext) -> None:
    found = sets_service.create_set(ctx.db, name="Batches", fields=FIELDS, actor="t")
    workflow, _ = workflows.create_workflow(ctx, _workflow(found.id, "released"), actor="t")
    assert _fired(ctx, found.id, "released")

    class Undo(Exception):
        pass

    with pytest.raises(Undo), ctx.db.transaction() as tx:
        queue.pause_signal(tx, workflow.signals[0].id, "410 Gone")
        plan = fanout.plan_for(tx, found.id)
        assert plan is not None
        assert plan.workflows[0].workflow.signals[0].paused_reason == "410 Gone"
        raise Undo  # rolled back: the pause never happened

    with ctx.db.reading() as tx:
        plan = fanout.plan_for(tx, found.id)
        assert plan is not None
        assert plan.workflows[0].workflow.signals[0].paused_reason is None
    # The next committed change takes the version the rolled-back one had: nothing read inside
    # that transaction may come back under it.
    sets_service.update_set(ctx, found.id, name="Batches (renamed)", actor="t")
    with ctx.db.reading() as tx:
        plan = fanout.plan_for(tx, found.id)
        assert plan is not None
        assert plan.current.name == "Batches (renamed)"
        assert plan.workflows[0].workflow.signals[0].paused_reason is None

    with ctx.db.transaction() as tx:
        queue.pause_signal(tx, workflow.signals[0].id, "410 Gone")
    with ctx.db.reading() as tx:
        plan = fanout.plan_for(tx, found.id)
        assert plan is not None
        assert plan.workflows[0].workflow.signals[0].paused_reason == "410 Gone"


def test_a_set_created_after_a_miss_is_found(ctx: AppContext, other: AppContext) -> None:
    with other.db.reading() as tx:
        assert fanout.plan_for(tx, 1) is None  # no set yet: nothing is kept for it
    found = sets_service.create_set(ctx.db, name="Batches", fields=FIELDS, actor="t")
    assert found.id == 1
    workflows.create_workflow(ctx, _workflow(found.id, "released"), actor="t")
    assert _fired(other, found.id, "released")
    with other.db.reading() as tx:
        assert tx.execute(select(deliveries.c.id)).all()
