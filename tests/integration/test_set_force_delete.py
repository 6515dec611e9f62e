"""DELETE /api/v1/sets/{id}?force=true on SQLite and PostgreSQL: every result deleted writes its
``deleted`` event and fans out (deletion workflows fire) in the transaction that drops the set."""

from __future__ import annotations

import httpx

from qhook.context import AppContext
from qhook.store import events as event_store
from tests.support.workflows import add_result, deliveries_of, events_of, make_set, make_workflow

LOG_FIELDS = [
    {"name": "batchnumber_", "type": "text", "required": True},
    {"name": "origin_", "type": "text"},
]


async def test_force_delete_writes_deleted_events_and_fires_deletion_workflows(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    set_id = await make_set(api)
    log_set = await make_set(api, name="Deletion log", fields=LOG_FIELDS)
    webhook = await make_workflow(api, set_id, name="Tell ERP", triggers={"deletion": True})
    transfer = await make_workflow(
        api,
        set_id,
        name="Keep a record",
        triggers={"deletion": True},
        signals=[
            {
                "type": "transfer",
                "set_id": log_set,
                "key_field": "batchnumber_",
                "values": {"batchnumber_": "{{ batchnumber_ }}", "origin_": "{{ set.name }}"},
            }
        ],
    )
    ids = [await add_result(api, set_id, batchnumber_=f"B-{n}", status_="released") for n in (1, 2, 3)]

    refused = await api.delete(f"/api/v1/sets/{set_id}")
    assert refused.status_code == 409
    assert len(await events_of(api, ids[0])) == 1  # nothing happened

    # The webhook workflow's signals go with the set, so its deletion deliveries could never be
    # sent: refused, naming it, until someone decides to switch it off.
    refused = await api.delete(f"/api/v1/sets/{set_id}", params={"force": "true"})
    assert refused.status_code == 409
    assert "'Tell ERP'" in refused.json()["error"] and "Keep a record" not in refused.json()["error"]
    assert len(await events_of(api, ids[0])) == 1
    # What GET shows can be sent back as it is, with one change.
    shown = (await api.get(f"/api/v1/workflows/{webhook['id']}")).json()
    paused = await api.patch(f"/api/v1/workflows/{webhook['id']}", json={**shown, "active": False})
    assert paused.status_code == 200, paused.text

    deleted = await api.delete(f"/api/v1/sets/{set_id}", params={"force": "true"})
    assert deleted.status_code == 204, deleted.text
    assert (await api.get(f"/api/v1/sets/{set_id}")).status_code == 404

    for number, result_id in enumerate(ids, start=1):
        with ctx.db.reading() as tx:
            trail = event_store.list_events(tx, result_id=result_id)
        last = max(trail, key=lambda e: e.id)
        assert last.action == "deleted" and last.actor == "alice"
        assert last.before is not None and last.before["batchnumber_"] == f"B-{number}"
        assert last.after is None
        fired = {e["workflow_id"]: e["fired"] for e in last.evaluations}
        assert fired == {webhook["id"]: False, transfer["id"]: True}
        assert [d for d in deliveries_of(ctx, result_id) if d.action == "deleted"] == []

    logged = await api.get(f"/api/v1/sets/{log_set}/results")
    assert logged.status_code == 200
    rows = logged.json()["items"]
    assert sorted(r["values"]["batchnumber_"] for r in rows) == ["B-1", "B-2", "B-3"]
    assert {r["values"]["origin_"] for r in rows} == {"Batch release"}

    audit = (await api.get("/api/v1/audit", params={"target_type": "set"})).json()["items"]
    assert audit[0]["action"] == "set.delete" and audit[0]["details"]["results_deleted"] == 3


async def test_force_delete_of_an_empty_set_and_an_unknown_one(api: httpx.AsyncClient) -> None:
    set_id = await make_set(api)
    assert (await api.delete(f"/api/v1/sets/{set_id}", params={"force": "true"})).status_code == 204
    assert (await api.delete(f"/api/v1/sets/{set_id}", params={"force": "true"})).status_code == 404
