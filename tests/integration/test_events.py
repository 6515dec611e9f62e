"""Events: the audit trail written with every result change, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx

from qhook.context import AppContext
from qhook.services import results
from tests.conftest import auth
from tests.integration.test_results import store
from tests.integration.test_sets import make_set


async def test_create_modify_delete_trail(api: httpx.AsyncClient) -> None:
    set_id = (await make_set(api))["id"]
    created = await store(
        api, set_id, {"batchnumber_": "B-1234", "status_": "draft", "ph_": 7}, date="2025-10-02T13:37:00Z"
    )
    url = f"/api/v1/sets/{set_id}/results/{created['id']}"
    await api.patch(
        url, json={"values": {"status_": "released", "ph_": None}, "date": "2025-10-03T00:00:00Z"}
    )
    await api.delete(url)

    listed = await api.get("/api/v1/events", params={"result_id": created["id"]})
    assert listed.status_code == 200
    deleted, modified, new = listed.json()["items"]
    assert [new["action"], modified["action"], deleted["action"]] == ["new", "modified", "deleted"]
    assert new["id"] < modified["id"] < deleted["id"]
    for event in (new, modified, deleted):
        assert event["uid"].startswith("evt_") and len(event["uid"]) == 30
        assert event["actor"] == "alice"
        assert event["set_id"] == set_id and event["result_id"] == created["id"]
        assert event["evaluations"] == [] and event["chain"] is None
        assert event["occurred_at"]
    first_flat = {
        "@id": created["id"],
        "date": "2025-10-02 13:37:00",
        "batchnumber_": "B-1234",
        "status_": "draft",
        "ph_": 7.0,
        "expiry_": None,
    }
    assert new["before"] is None
    assert new["after"] == first_flat
    assert new["changes"]["status_"] == {"old": None, "new": "draft"}
    assert modified["before"] == first_flat
    assert modified["after"] == {
        **first_flat,
        "date": "2025-10-03 00:00:00",
        "status_": "released",
        "ph_": None,
    }
    assert modified["changes"] == {
        "date": {"old": "2025-10-02 13:37:00", "new": "2025-10-03 00:00:00"},
        "status_": {"old": "draft", "new": "released"},
        "ph_": {"old": 7.0, "new": None},
    }
    assert deleted["before"] == modified["after"] and deleted["after"] is None


async def test_filters_cursor_and_set_permissions(
    api: httpx.AsyncClient, client: httpx.AsyncClient, ctx: AppContext, make_key: Any
) -> None:
    one = (await make_set(api))["id"]
    two = (await make_set(api, {"name": "Other", "fields": [{"name": "x_", "type": "text"}]}))["id"]
    for i in range(3):
        await store(api, one, {"batchnumber_": f"B-{i}"})
    other = await store(api, two, {"x_": "y"})

    everything = (await api.get("/api/v1/events")).json()["items"]
    assert len(everything) == 4 and everything[0]["result_id"] == other["id"]
    by_set = (await api.get("/api/v1/events", params={"set_id": one})).json()["items"]
    assert {e["set_id"] for e in by_set} == {one} and len(by_set) == 3

    page = (await api.get("/api/v1/events", params={"limit": 3})).json()
    assert len(page["items"]) == 3 and page["next_cursor"]
    rest = (await api.get("/api/v1/events", params={"limit": 3, "cursor": page["next_cursor"]})).json()
    assert [e["id"] for e in page["items"] + rest["items"]] == [e["id"] for e in everything]
    assert rest["next_cursor"] is None

    limited = make_key("viewer", "limited", [two])
    mine = (await client.get("/api/v1/events", headers=auth(limited))).json()["items"]
    assert [e["set_id"] for e in mine] == [two]
    denied = await client.get("/api/v1/events", params={"set_id": one}, headers=auth(limited))
    assert denied.status_code == 403
    # A result id in another set gives nothing, not its trail.
    hidden = await client.get(
        "/api/v1/events", params={"result_id": by_set[0]["result_id"]}, headers=auth(limited)
    )
    assert hidden.json()["items"] == []
    assert (await client.get("/api/v1/events", headers={"Authorization": ""})).status_code == 401


async def test_chain_is_kept_on_the_event(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = (await make_set(api))["id"]
    chain = {"depth": 1, "origin_event": "evt_01J00000000000000000000000", "workflows": [4]}
    with ctx.db.transaction() as tx:
        created = results.create_result_tx(
            tx, ctx, set_id=set_id, values={"batchnumber_": "C"}, actor="system", chain=chain
        )
    event = results.list_events(ctx.db, result_id=created.id)[0]
    assert event.chain == chain and event.actor == "system"
