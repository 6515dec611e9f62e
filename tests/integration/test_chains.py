"""Chained signals on both databases: update_result, transfer by key field, and the loop guard."""

from __future__ import annotations

import httpx

from qhook.context import AppContext
from tests.support.workflows import RECEIVER, add_result, deliveries_of, events_of, make_set, make_workflow

MASTER_FIELDS = [
    {"name": "batchnumber_", "type": "text", "required": True},
    {"name": "origin_", "type": "text"},
    {"name": "count_", "type": "integer"},
]


async def result_values(api: httpx.AsyncClient, set_id: int, result_id: int) -> dict[str, object]:
    response = await api.get(f"/api/v1/sets/{set_id}/results/{result_id}")
    assert response.status_code == 200, response.text
    values: dict[str, object] = response.json()["values"]
    return values


async def test_update_result_chain_fires_the_sets_workflows(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = await make_set(api)
    marker = await make_workflow(
        api,
        set_id,
        name="Mark queued",
        triggers={"entry": True},
        signals=[
            {"type": "update_result", "values": {"erp_sync_": "queued", "note_": "{{ batchnumber_ }} sent"}}
        ],
    )
    follower = await make_workflow(
        api,
        set_id,
        name="On sync change",
        triggers={"modification": {"fields": ["erp_sync_"]}},
        signals=[{"type": "webhook", "url": RECEIVER}],
    )
    result_id = await add_result(api, set_id, batchnumber_="B-7")
    values = await result_values(api, set_id, result_id)
    assert values["erp_sync_"] == "queued" and values["note_"] == "B-7 sent"
    new_event, chained = await events_of(api, result_id)
    assert chained["action"] == "modified" and chained["actor"] == "system"
    assert chained["chain"] == {"depth": 1, "origin_event": new_event["uid"], "workflows": [marker["id"]]}
    by_id = {e["workflow_id"]: e for e in chained["evaluations"]}
    assert by_id[follower["id"]]["fired"] is True
    assert by_id[marker["id"]]["fired"] is False  # entry only, and already in the chain anyway
    [delivery] = deliveries_of(ctx, result_id)
    assert delivery.workflow_id == follower["id"] and delivery.action == "modified"


async def test_transfer_creates_then_updates_by_key_field(api: httpx.AsyncClient, ctx: AppContext) -> None:
    source = await make_set(api)
    target = await make_set(api, "Master data", MASTER_FIELDS)
    downstream = await make_workflow(
        api, target, name="Master to ERP", triggers={"entry": True, "modification": True}
    )
    await make_workflow(
        api,
        source,
        name="Copy to master",
        triggers={"entry": True, "modification": True},
        signals=[
            {
                "type": "transfer",
                "set_id": target,
                "key_field": "batchnumber_",
                "values": {"batchnumber_": "{{ batchnumber_ }}", "origin_": "{{ set.name }}: {{ status_ }}"},
            }
        ],
    )
    result_id = await add_result(api, source, batchnumber_="B-8", status_="draft")
    listed = (await api.get(f"/api/v1/sets/{target}/results")).json()
    items = listed["items"] if isinstance(listed, dict) else listed
    assert len(items) == 1
    master_id = items[0]["id"]
    assert items[0]["values"]["origin_"] == "Batch release: draft"
    response = await api.patch(
        f"/api/v1/sets/{source}/results/{result_id}", json={"values": {"status_": "released"}}
    )
    assert response.status_code == 200
    listed = (await api.get(f"/api/v1/sets/{target}/results")).json()
    items = listed["items"] if isinstance(listed, dict) else listed
    assert [i["id"] for i in items] == [master_id]  # updated by key, not created again
    assert items[0]["values"]["origin_"] == "Batch release: released"
    # The target set's workflows fired in turn: one delivery per master change.
    master_deliveries = deliveries_of(ctx, master_id)
    assert [d.action for d in master_deliveries] == ["new", "modified"]
    assert all(d.workflow_id == downstream["id"] for d in master_deliveries)
    master_events = await events_of(api, master_id)
    assert master_events[0]["chain"]["depth"] == 1


async def test_loop_guard_stops_with_a_recorded_reason(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = await make_set(api)
    # Two workflows that would bounce the same result between them forever.
    ping = await make_workflow(
        api,
        set_id,
        name="Ping",
        triggers={"entry": True, "modification": {"fields": ["note_"]}},
        signals=[{"type": "update_result", "values": {"erp_sync_": "{{ note_ }}x"}}],
    )
    pong = await make_workflow(
        api,
        set_id,
        name="Pong",
        triggers={"modification": {"fields": ["erp_sync_"]}},
        signals=[{"type": "update_result", "values": {"note_": "{{ erp_sync_ }}y"}}],
    )
    result_id = await add_result(api, set_id, batchnumber_="B-9", note_="a")
    events = await events_of(api, result_id)
    assert [e["action"] for e in events] == ["new", "modified", "modified"]
    last = events[-1]
    assert last["chain"]["workflows"] == [ping["id"], pong["id"]]
    by_id = {e["workflow_id"]: e for e in last["evaluations"]}
    assert by_id[ping["id"]]["fired"] is False
    assert "workflow already in chain" in by_id[ping["id"]]["reason"]
    values = await result_values(api, set_id, result_id)
    assert values["erp_sync_"] == "ax" and values["note_"] == "axy"
    assert pong["id"] in last["chain"]["workflows"]


async def test_chain_depth_limit(api: httpx.AsyncClient, ctx: AppContext) -> None:
    # A ladder of workflows, each triggered by the previous one's field: longer than the limit.
    fields = [{"name": "batchnumber_", "type": "text"}] + [
        {"name": f"step{i}_", "type": "integer"} for i in range(12)
    ]
    set_id = await make_set(api, "Ladder", fields)
    for i in range(11):
        await make_workflow(
            api,
            set_id,
            name=f"Step {i}",
            triggers={"modification": {"fields": [f"step{i}_"]}} if i else {"entry": True},
            signals=[{"type": "update_result", "values": {f"step{i + 1}_": i + 1}}],
        )
    result_id = await add_result(api, set_id, batchnumber_="L-1")
    events = await events_of(api, result_id)
    limit = ctx.settings.max_chain_depth
    assert max((e["chain"] or {}).get("depth", 0) for e in events) == limit
    deepest = events[-1]
    reasons = [e["reason"] for e in deepest["evaluations"] if e["fired"]]
    assert any("exceeds QHOOK_MAX_CHAIN_DEPTH" in r for r in reasons), reasons
    values = await result_values(api, set_id, result_id)
    assert values[f"step{limit}_"] == limit and values.get(f"step{limit + 1}_") is None


async def test_failed_chain_step_is_recorded_and_the_change_commits(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    set_id = await make_set(api)
    target = await make_set(api, "Master data", MASTER_FIELDS)
    await make_workflow(
        api,
        set_id,
        triggers={"entry": True},
        signals=[
            {
                "type": "transfer",
                "set_id": target,
                "key_field": "batchnumber_",
                "values": {"batchnumber_": "{{ batchnumber_ }}", "count_": "{{ ph_ }}"},
            },
            {"type": "webhook", "url": RECEIVER},
        ],
    )
    result_id = await add_result(api, set_id, batchnumber_="B-1", ph_=6.5)
    [event] = await events_of(api, result_id)
    assert event["evaluations"][0]["fired"] is True
    assert "(transfer) failed" in event["evaluations"][0]["reason"]
    assert len(deliveries_of(ctx, result_id)) == 1  # the webhook still went out
    listed = (await api.get(f"/api/v1/sets/{target}/results")).json()
    assert (listed["items"] if isinstance(listed, dict) else listed) == []


async def test_a_template_writing_nul_stores_a_replacement_character(api: httpx.AsyncClient) -> None:
    """A literal "\\x00" in a template made a NUL that PostgreSQL's text refuses: the chained
    write failed the result's own write with a 500. It is stored as U+FFFD on both databases."""
    set_id = await make_set(api)
    await make_workflow(
        api,
        set_id,
        name="Note with NUL",
        triggers={"entry": True},
        signals=[{"type": "update_result", "values": {"note_": '{{ batchnumber_ }}{{ "\\x00" }}!'}}],
    )
    result_id = await add_result(api, set_id, batchnumber_="B-1")
    assert (await result_values(api, set_id, result_id))["note_"] == "B-1\ufffd!"
