"""Fan-out inside the result's transaction, on both databases: deliveries, triggers, evaluations."""

from __future__ import annotations

import json

import httpx
import pytest

from qhook.context import AppContext
from qhook.services import results
from qhook.store import deliveries as delivery_store
from qhook.store import events as event_store
from tests.support.workflows import (
    RECEIVER,
    add_result,
    deliveries_of,
    events_of,
    make_set,
    make_workflow,
    patch_result,
)


async def test_fired_webhook_is_a_pending_delivery_with_frozen_body(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    set_id = await make_set(api)
    workflow = await make_workflow(
        api,
        set_id,
        signals=[
            {
                "type": "webhook",
                "url": RECEIVER,
                "subject": "Batch {{ batchnumber_ }} released",
                "message": "Released by {{ actor }}",
                "ordered": True,
            }
        ],
    )
    result_id = await add_result(api, set_id, batchnumber_="B-1234", status_="released", ph_=6.8)
    [delivery] = deliveries_of(ctx, result_id)
    assert delivery.status == "pending"
    assert delivery.webhook_id.startswith("msg_")
    assert delivery.endpoint == "http://127.0.0.1:9"
    assert delivery.url == RECEIVER
    assert delivery.workflow_id == workflow["id"] and delivery.signal_id == workflow["signals"][0]["id"]
    assert delivery.ordered and delivery.order_key == f"{workflow['signals'][0]['id']}:{result_id}"
    body = json.loads(delivery.body)
    assert list(body) == [
        "action",
        "subject",
        "message",
        "results",
        "changes",
        "set",
        "workflow",
        "event_id",
        "occurred_at",
        "result_version",
    ]
    assert body["action"] == "new" and body["result_version"] == 1
    assert body["subject"] == "Batch B-1234 released"
    assert body["message"] == "Released by alice"
    assert body["results"]["@id"] == result_id
    assert body["results"]["status_"] == "released" and body["results"]["ph_"] == 6.8
    assert body["set"] == {"id": set_id, "name": "Batch release"}
    assert body["workflow"] == {"id": workflow["id"], "name": "Released batches to ERP"}
    [event] = await events_of(api, result_id)
    assert body["event_id"] == event["uid"]
    assert event["evaluations"] == [
        {"workflow_id": workflow["id"], "fired": True, "reason": event["evaluations"][0]["reason"]}
    ]
    assert event["evaluations"][0]["reason"].startswith("fired: trigger: entry")


async def test_rollback_leaves_no_event_and_no_delivery(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = await make_set(api)
    await make_workflow(api, set_id)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), ctx.db.transaction() as tx:
        created = results.create_result_tx(tx, ctx, set_id=set_id, values={"batchnumber_": "B-9"}, actor="t")
        assert delivery_store.deliveries_of_result(tx, created.id)  # written inside the transaction
        raise Boom
    with ctx.db.reading() as tx:
        assert event_store.list_events(tx, set_id=set_id) == []
        assert delivery_store.deliveries_of_result(tx, created.id) == []


async def test_each_trigger_kind(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = await make_set(api)
    await make_workflow(api, set_id, triggers={"modification": True, "deletion": True})
    result_id = await add_result(api, set_id, batchnumber_="B-1", status_="draft")
    assert deliveries_of(ctx, result_id) == []  # entry is off
    await patch_result(api, set_id, result_id, status_="released")
    [modified] = deliveries_of(ctx, result_id)
    assert json.loads(modified.body)["changes"] == {"status_": {"old": "draft", "new": "released"}}
    assert modified.action == "modified"
    assert (await api.delete(f"/api/v1/sets/{set_id}/results/{result_id}")).status_code == 204
    deleted = deliveries_of(ctx, result_id)[-1]
    body = json.loads(deleted.body)
    assert deleted.action == "deleted" and body["action"] == "deleted"
    assert body["results"]["batchnumber_"] == "B-1" and body["results"]["status_"] == "released"


async def test_result_version_orders_a_results_bodies_on_every_path(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """Without ``ordered``, a retry of an older change can reach the receiver after a newer one.
    Each body says which version of its result it shows, so the receiver can keep the newest:
    one more per change that changes something, the deletion after the last, a manual run the
    version as it stands; the same through storeResults' batched path and on the event."""
    set_id = await make_set(api)
    workflow = await make_workflow(
        api, set_id, triggers={"entry": True, "modification": True, "deletion": True, "manual": True}
    )
    result_id = await add_result(api, set_id, batchnumber_="B-1", status_="draft")
    await patch_result(api, set_id, result_id, status_="released")
    await patch_result(api, set_id, result_id, status_="released")  # no change: no event, no version
    await patch_result(api, set_id, result_id, ph_=6.5)
    run = await api.post(f"/api/v1/workflows/{workflow['id']}/run", json={"result_ids": [result_id]})
    assert run.status_code == 200, run.text
    assert (await api.delete(f"/api/v1/sets/{set_id}/results/{result_id}")).status_code == 204
    sent = [json.loads(d.body) for d in deliveries_of(ctx, result_id)]
    assert [(b["action"], b["result_version"]) for b in sent] == [
        ("new", 1),
        ("modified", 2),
        ("modified", 3),
        ("manual", 3),
        ("deleted", 4),
    ]
    events = await events_of(api, result_id)
    assert [(e["action"], e["result_version"]) for e in events] == [
        (b["action"], b["result_version"]) for b in sent
    ]
    assert [e["uid"] for e in events] == [b["event_id"] for b in sent]

    # storeResults with a key field: the batched fan-out, several changes of one result in a call.
    stored = await api.post(
        "/api/storeResults",
        data={
            "setId": str(set_id),
            "keyField": "batchnumber_",
            "results": json.dumps(
                [
                    {"batchnumber_": "B-2", "status_": "draft"},
                    {"batchnumber_": "B-2", "status_": "released"},
                    {"batchnumber_": "B-3", "status_": "draft"},
                ]
            ),
        },
    )
    assert stored.status_code == 200, stored.text
    with ctx.db.reading() as tx:
        by_batch: dict[str, list[tuple[str, int]]] = {}
        for event in event_store.list_events(tx, set_id=set_id, limit=20)[::-1]:
            rows = delivery_store.deliveries_of_result(tx, event.result_id or 0)
            bodies = [json.loads(d.body) for d in rows if json.loads(d.body)["event_id"] == event.uid]
            [body] = bodies
            assert body["result_version"] == event.result_version
            name = body["results"]["batchnumber_"]
            by_batch.setdefault(name, []).append((body["action"], body["result_version"]))
    assert by_batch["B-2"] == [("new", 1), ("modified", 2)]
    assert by_batch["B-3"] == [("new", 1)]


async def test_field_limited_modification_and_no_op_save(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = await make_set(api)
    workflow = await make_workflow(api, set_id, triggers={"modification": {"fields": ["status_"]}})
    result_id = await add_result(api, set_id, batchnumber_="B-1", status_="draft", ph_=6.0)
    await patch_result(api, set_id, result_id, ph_=7.0)
    assert deliveries_of(ctx, result_id) == []
    events = await events_of(api, result_id)
    assert events[-1]["evaluations"] == [
        {
            "workflow_id": workflow["id"],
            "fired": False,
            "reason": "trigger: modification limited to status_, changed: ph_",
        }
    ]
    await patch_result(api, set_id, result_id, status_="released")
    assert len(deliveries_of(ctx, result_id)) == 1
    # A save that changes nothing: no event, nothing fires.
    before = len(await events_of(api, result_id))
    await patch_result(api, set_id, result_id, status_="released", ph_=7.0)
    assert len(await events_of(api, result_id)) == before
    assert len(deliveries_of(ctx, result_id)) == 1


async def test_evaluation_trace_on_events(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = await make_set(api)
    filtered = await make_workflow(
        api, set_id, name="Released only", filter={"field": "status_", "op": "eq", "value": "released"}
    )
    paused = await make_workflow(api, set_id, name="Paused", active=False)
    manual = await make_workflow(api, set_id, name="Manual", triggers={"manual": True})
    result_id = await add_result(api, set_id, batchnumber_="B-1", status_="draft")
    [event] = await events_of(api, result_id)
    by_id = {e["workflow_id"]: e for e in event["evaluations"]}
    assert by_id[filtered["id"]] == {
        "workflow_id": filtered["id"],
        "fired": False,
        "reason": "filter not met: status_ is 'draft', expected eq 'released'",
    }
    assert by_id[paused["id"]]["reason"] == "inactive"
    assert by_id[manual["id"]]["reason"] == "manual only"
    assert deliveries_of(ctx, result_id) == []


async def test_two_workflows_both_deliver_and_each_at_most_once(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    set_id = await make_set(api)
    first = await make_workflow(api, set_id, name="One")
    second = await make_workflow(
        api,
        set_id,
        name="Two",
        signals=[{"type": "webhook", "url": "http://127.0.0.1:9/other", "payload": "result"}],
    )
    result_id = await add_result(api, set_id, batchnumber_="B-1")
    found = deliveries_of(ctx, result_id)
    assert sorted(d.workflow_id for d in found) == sorted([first["id"], second["id"]])
    assert len({d.webhook_id for d in found}) == 2
    by_workflow = {d.workflow_id: d for d in found}
    assert json.loads(by_workflow[second["id"]].body) == json.loads(by_workflow[first["id"]].body)["results"]
    [event] = await events_of(api, result_id)
    assert len(event["evaluations"]) == 2 and all(e["fired"] for e in event["evaluations"])


async def test_changes_in_bodies_only_for_modified(api: httpx.AsyncClient, ctx: AppContext) -> None:
    """docs/payload.md: ``changes`` is ``{}`` for every action but ``modified``. Bodies of new and
    deleted results carried every field as a change (old null, or new null), in both the default
    envelope and a template's ``changes``. The event keeps them, for the Hub."""
    set_id = await make_set(api)
    await make_workflow(
        api,
        set_id,
        triggers={"entry": True, "modification": True, "deletion": True},
        signals=[
            {"type": "webhook", "url": RECEIVER},
            {
                "type": "webhook",
                "url": RECEIVER + "/t",
                "payload": "template",
                "body_template": '{"changed": {{ changes | tojson }}}',
            },
        ],
    )
    result_id = await add_result(api, set_id, batchnumber_="B-1", status_="draft")
    await patch_result(api, set_id, result_id, status_="released")
    assert (await api.delete(f"/api/v1/sets/{set_id}/results/{result_id}")).status_code == 204
    seen = {}
    for d in deliveries_of(ctx, result_id):
        body = json.loads(d.body)
        seen[(d.action, "changed" in body)] = body.get("changes", body.get("changed"))
    assert seen == {
        ("new", False): {},
        ("new", True): {},
        ("modified", False): {"status_": {"old": "draft", "new": "released"}},
        ("modified", True): {"status_": {"old": "draft", "new": "released"}},
        ("deleted", False): {},
        ("deleted", True): {},
    }
    new_event = (await events_of(api, result_id))[0]
    assert new_event["changes"]["status_"] == {"old": None, "new": "draft"}


async def test_a_save_changing_only_the_unicode_form_is_no_change(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """ "Müller" saved as u + combining diaeresis over "Müller" with one code point made a new
    version and a `modified` event whose old and new value read the same; every modification
    workflow fired (a workflow author's review). Through the API and through storeResults."""
    composed_name, decomposed_name = "M\u00fcller", "Mu\u0308ller"
    set_id = await make_set(api)
    await make_workflow(api, set_id, triggers={"modification": True})
    result_id = await add_result(api, set_id, batchnumber_=composed_name, status_="draft")
    before = len(await events_of(api, result_id))
    await patch_result(api, set_id, result_id, batchnumber_=decomposed_name)
    stored = await api.post(
        "/api/storeResults",
        data={
            "setId": str(set_id),
            "results": json.dumps([{"@id": result_id, "batchnumber_": decomposed_name}]),
        },
    )
    assert stored.status_code == 200, stored.text
    assert len(await events_of(api, result_id)) == before
    assert deliveries_of(ctx, result_id) == []
    shown = (await api.get(f"/api/v1/sets/{set_id}/results/{result_id}")).json()
    assert shown["values"]["batchnumber_"] == composed_name and shown["version"] == 1
    # A real change beside it is one, and only it is listed.
    await patch_result(api, set_id, result_id, batchnumber_=decomposed_name, status_="released")
    [modified] = deliveries_of(ctx, result_id)
    assert json.loads(modified.body)["changes"] == {"status_": {"old": "draft", "new": "released"}}
