"""Workflows whose set changed under them, and the reasons events give, on both databases.

A filter or a trigger naming a field that was since deactivated no longer fits the set: the workflow
stops firing and each event says so (docs/workflows.md, "Fields"). A filter on a deactivated field
went on firing, reading the field as empty; a modification trigger on one never fired again without
saying why; an on_date trigger on one still fired. Reasons come in the order a reader checks:
switched off, then the trigger, then the filter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from qhook import scheduler
from qhook.context import AppContext
from tests.support.workflows import (
    add_result,
    deliveries_of,
    events_of,
    make_set,
    make_workflow,
    patch_result,
    schedules_of,
)

STALE = "no longer fits the set"


def _reasons(event: dict[str, Any]) -> dict[int, tuple[bool, str]]:
    return {e["workflow_id"]: (e["fired"], e["reason"]) for e in event["evaluations"]}


async def _deactivate(api: httpx.AsyncClient, set_id: int, name: str) -> None:
    response = await api.patch(f"/api/v1/sets/{set_id}", json={"fields": [{"name": name, "active": False}]})
    assert response.status_code == 200, response.text


async def test_a_deactivated_field_stops_its_workflows_and_each_event_says_why(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    set_id = await make_set(api)
    by_filter = await make_workflow(
        api,
        set_id,
        name="filter",
        triggers={"entry": True, "modification": True},
        filter={"field": "operator_", "op": "ne", "value": "x"},
    )
    by_trigger = await make_workflow(
        api, set_id, name="trigger", triggers={"modification": {"fields": ["operator_"]}}
    )
    by_date = await make_workflow(
        api, set_id, name="date", triggers={"on_date": {"field": "expiry_", "offset": "P0D"}}
    )
    fine = await make_workflow(api, set_id, name="fine", triggers={"entry": True})
    both = await make_workflow(
        api,
        set_id,
        name="both",
        triggers={"modification": {"fields": ["operator_"]}, "on_date": {"field": "tested_"}},
    )
    earlier = await add_result(api, set_id, batchnumber_="B-0", expiry_="2031-03-10", tested_="2031-03-10")
    assert len(schedules_of(ctx, by_date["id"])) == 1 and len(schedules_of(ctx, both["id"])) == 1
    await _deactivate(api, set_id, "operator_")
    await _deactivate(api, set_id, "expiry_")
    # Deactivating drops the schedules of the workflows naming the field (a row left waiting fired
    # into the broken workflow, and that due time was gone for good).
    assert schedules_of(ctx, by_date["id"]) == [] and schedules_of(ctx, both["id"]) == []
    assert scheduler.tick(ctx, datetime(2032, 1, 1, tzinfo=UTC)) == 0

    result_id = await add_result(api, set_id, batchnumber_="B-1", note_="n")
    reasons = _reasons((await events_of(api, result_id))[-1])
    fired, why = reasons[by_filter["id"]]
    assert not fired and STALE in why and "operator_ is deactivated" in why, why
    assert reasons[fine["id"]][0] is True
    await patch_result(api, set_id, result_id, note_="changed")
    reasons = _reasons((await events_of(api, result_id))[-1])
    fired, why = reasons[by_trigger["id"]]
    assert not fired and why.startswith("trigger not met") and "operator_ is deactivated" in why, why
    assert not reasons[by_filter["id"]][0]
    # The on_date workflow keeps no schedule on a deactivated field, and sends nothing.
    assert schedules_of(ctx, by_date["id"]) == []
    assert scheduler.tick(ctx) == 0
    assert [d.workflow_id for d in deliveries_of(ctx, result_id)] == [fine["id"]]

    # Active again: the future due times come back, as when a workflow is switched on.
    again = {"fields": [{"name": "expiry_", "active": True}, {"name": "operator_", "active": True}]}
    assert (await api.patch(f"/api/v1/sets/{set_id}", json=again)).status_code == 200
    [row] = schedules_of(ctx, by_date["id"])
    assert row.result_id == earlier and row.due_at == datetime(2031, 3, 10, tzinfo=UTC)
    assert [r.result_id for r in schedules_of(ctx, both["id"])] == [earlier]
    await _deactivate(api, set_id, "operator_")
    await _deactivate(api, set_id, "expiry_")

    # The preview says what an event says.
    preview = await api.post(
        f"/api/v1/workflows/{by_filter['id']}/preview", json={"result_id": result_id, "action": "new"}
    )
    assert preview.status_code == 200, preview.text
    assert preview.json()["would_fire"] is False and "operator_ is deactivated" in preview.json()["reason"]

    # Saving a workflow on a deactivated field says that it is deactivated.
    for body, field in (
        ({"filter": {"field": "operator_", "op": "empty"}}, "filter.field"),
        ({"triggers": {"modification": {"fields": ["operator_"]}}}, "triggers.modification.fields[0]"),
        ({"triggers": {"on_date": {"field": "expiry_"}}}, "triggers.on_date.field"),
    ):
        doc = {"name": "new", "set_id": set_id, "triggers": {"entry": True}, **body}
        refused = await api.post("/api/v1/workflows", json=doc)
        assert refused.status_code == 422, refused.text
        [detail] = refused.json()["details"]
        assert detail["field"] == field and "is deactivated" in detail["error"], detail


async def test_reasons_follow_the_order_a_reader_checks(api: httpx.AsyncClient) -> None:
    """An inactive workflow, or one whose trigger does not match, was explained as "filter no
    longer fits" when its filter had gone stale."""
    set_id = await make_set(api)
    stale_filter = {"field": "status_", "op": "eq", "value": "released"}
    inactive = await make_workflow(api, set_id, name="off", active=False, filter=stale_filter)
    deletion = await make_workflow(api, set_id, name="del", triggers={"deletion": True}, filter=stale_filter)
    relabel = {"fields": [{"name": "status_", "options": [{"id": 2, "label": "approved"}]}]}
    assert (await api.patch(f"/api/v1/sets/{set_id}", json=relabel)).status_code == 200
    result_id = await add_result(api, set_id, batchnumber_="B-1")
    reasons = _reasons((await events_of(api, result_id))[-1])
    assert reasons[inactive["id"]] == (False, "inactive")
    fired, why = reasons[deletion["id"]]
    assert not fired and STALE not in why and "entry" in why, why


async def test_a_met_all_names_its_conditions(api: httpx.AsyncClient) -> None:
    """'not (all conditions met)' said neither which fields nor which values."""
    set_id = await make_set(api)
    workflow = await make_workflow(
        api,
        set_id,
        filter={
            "not": {
                "all": [
                    {"field": "status_", "op": "eq", "value": "released"},
                    {"field": "ph_", "op": "gte", "value": 7},
                ]
            }
        },
    )
    result_id = await add_result(api, set_id, batchnumber_="B-1", status_="released", ph_=7.5)
    fired, why = _reasons((await events_of(api, result_id))[-1])[workflow["id"]]
    assert not fired
    assert why == (
        "filter not met: not (all of: status_ is 'released', expected eq 'released'; "
        "ph_ is 7.5, expected gte 7.0)"
    ), why


async def test_a_datetime_filter_value_counts_to_the_second_as_stored_values(
    api: httpx.AsyncClient,
) -> None:
    """Stored date-times are whole seconds; a filter value kept its fraction: 'lt 07:00:00.5' met
    a value given as 07:00:00.9 and explained it as "is 07:00:00Z, expected lt 07:00:00Z"."""
    set_id = await make_set(api)
    before = await make_workflow(
        api, set_id, name="lt", filter={"field": "tested_", "op": "lt", "value": "2026-01-01T07:00:00.500Z"}
    )
    equal = await make_workflow(
        api, set_id, name="eq", filter={"field": "tested_", "op": "eq", "value": "2026-01-01T07:00:00.400Z"}
    )
    result_id = await add_result(api, set_id, batchnumber_="B-1", tested_="2026-01-01T07:00:00.900Z")
    reasons = _reasons((await events_of(api, result_id))[-1])
    assert reasons[before["id"]] == (
        False,
        "filter not met: tested_ is '2026-01-01T07:00:00Z', expected lt '2026-01-01T07:00:00Z'",
    )
    assert reasons[equal["id"]][0] is True
