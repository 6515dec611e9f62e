"""Sets through the native API, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx

from qhook.context import AppContext
from qhook.services import audit
from tests.conftest import auth

BATCH_SET: dict[str, Any] = {
    "name": "Batch release",
    "kind": "analysis_set",
    "fields": [
        {"name": "batchnumber_", "label": "Batch number", "type": "text", "required": True},
        {"name": "status_", "type": "list", "options": ["draft", "released", "blocked"]},
        {"name": "ph_", "type": "number"},
        {"name": "expiry_", "type": "datetime"},
    ],
}


async def make_set(api: httpx.AsyncClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await api.post("/api/v1/sets", json=body or BATCH_SET)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_create_set_gives_option_ids(api: httpx.AsyncClient, ctx: AppContext) -> None:
    created = await make_set(api)
    assert created["name"] == "Batch release"
    assert created["kind"] == "analysis_set"
    names = [f["name"] for f in created["fields"]]
    assert names == ["batchnumber_", "status_", "ph_", "expiry_"]
    status = created["fields"][1]
    assert status["options"] == [
        {"id": 1, "label": "draft", "active": True},
        {"id": 2, "label": "released", "active": True},
        {"id": 3, "label": "blocked", "active": True},
    ]
    assert created["fields"][0]["required"] is True and created["fields"][0]["label"] == "Batch number"
    fetched = await api.get(f"/api/v1/sets/{created['id']}")
    assert fetched.json() == created
    assert [e.action for e in audit.list_entries(ctx.db)][:1] == ["set.create"]


async def test_create_set_validation_names_the_field(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/v1/sets",
        json={"name": "x", "fields": [{"name": "ok_", "type": "text"}, {"name": "b_", "type": "?"}]},
    )
    assert response.status_code == 422
    body = response.json()
    assert body["details"] == [{"field": "fields[1].type", "error": body["details"][0]["error"]}]
    assert "one of text" in body["details"][0]["error"]
    response = await api.post("/api/v1/sets", json={"name": "x", "kind": "table"})
    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "kind"
    assert (await api.get("/api/v1/sets")).json() == []


async def test_only_admins_create_and_everyone_lists_their_sets(
    api: httpx.AsyncClient, client: httpx.AsyncClient, editor_key: str, make_key: Any
) -> None:
    first = await make_set(api)
    second = await make_set(api, {"name": "Suppliers", "kind": "selection_list", "fields": []})
    response = await client.post("/api/v1/sets", json=BATCH_SET, headers=auth(editor_key))
    assert response.status_code == 403
    listed = await client.get("/api/v1/sets", headers=auth(editor_key))
    assert [s["id"] for s in listed.json()] == [first["id"], second["id"]]
    limited = make_key("viewer", "lim", [second["id"]])
    listed = await client.get("/api/v1/sets", headers=auth(limited))
    assert [s["name"] for s in listed.json()] == ["Suppliers"]
    denied = await client.get(f"/api/v1/sets/{first['id']}", headers=auth(limited))
    assert denied.status_code == 403
    assert denied.json()["error"] == "No read permission for this set"


async def test_patch_adds_relabels_and_deactivates_without_dropping(api: httpx.AsyncClient) -> None:
    created = await make_set(api)
    set_id = created["id"]
    stored = await api.post(
        f"/api/v1/sets/{set_id}/results",
        json={"values": {"batchnumber_": "B-1", "ph_": 7, "status_": "blocked"}},
    )
    assert stored.status_code == 201, stored.text
    response = await api.patch(
        f"/api/v1/sets/{set_id}",
        json={
            "name": "Batches",
            "fields": [
                {"name": "status_", "label": "Status", "options": [{"id": 3, "active": False}, "on hold"]},
                {"name": "ph_", "active": False},
                {"name": "note_", "type": "text", "label": "Note"},
            ],
        },
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["name"] == "Batches"
    by_name = {f["name"]: f for f in patched["fields"]}
    assert set(by_name) == {"batchnumber_", "status_", "ph_", "expiry_", "note_"}
    assert by_name["status_"]["label"] == "Status"
    assert by_name["status_"]["options"][2] == {"id": 3, "label": "blocked", "active": False}
    assert by_name["status_"]["options"][3] == {"id": 4, "label": "on hold", "active": True}
    assert by_name["ph_"]["active"] is False
    assert by_name["note_"]["position"] == 5
    # The data stays: the deactivated field's value and the deactivated option's label remain readable.
    result = (await api.get(f"/api/v1/sets/{set_id}/results/{stored.json()['id']}")).json()
    assert result["values"]["ph_"] == 7.0
    assert result["values"]["status_"] == "blocked"
    assert result["values"]["note_"] is None
    # ... but new writes cannot use them.
    refused = await api.post(
        f"/api/v1/sets/{set_id}/results", json={"values": {"batchnumber_": "B-2", "status_": "blocked"}}
    )
    assert refused.status_code == 422
    assert refused.json()["details"][0]["field"] == "values.status_"


async def test_patch_refuses_type_change(api: httpx.AsyncClient) -> None:
    created = await make_set(api)
    response = await api.patch(
        f"/api/v1/sets/{created['id']}", json={"fields": [{"name": "ph_", "type": "text"}]}
    )
    assert response.status_code == 409
    assert "ph_" in response.json()["error"]
    again = (await api.get(f"/api/v1/sets/{created['id']}")).json()
    assert again == created


async def test_delete_refused_while_results_exist_unless_forced(api: httpx.AsyncClient) -> None:
    created = await make_set(api)
    set_id = created["id"]
    empty = await make_set(api, {"name": "Empty", "fields": []})
    assert (await api.delete(f"/api/v1/sets/{empty['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/sets/{empty['id']}")).status_code == 404
    await api.post(f"/api/v1/sets/{set_id}/results", json={"values": {"batchnumber_": "B-1"}})
    refused = await api.delete(f"/api/v1/sets/{set_id}")
    assert refused.status_code == 409
    assert "force=true" in refused.json()["error"]
    assert (await api.get(f"/api/v1/sets/{set_id}")).status_code == 200
    assert (await api.delete(f"/api/v1/sets/{set_id}?force=true")).status_code == 204
    assert (await api.get(f"/api/v1/sets/{set_id}")).status_code == 404
    assert (await api.get(f"/api/v1/sets/{set_id}/results")).status_code == 404
