"""Results through the native API and the services, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from qhook.context import AppContext
from qhook.errors import NotFound
from qhook.services import fanout, results
from qhook.store.tables import events
from qhook.store.tables import results as results_table
from tests.conftest import auth
from tests.integration.test_sets import BATCH_SET, make_set
from tests.support.workflows import make_workflow


@pytest.fixture
async def set_id(api: httpx.AsyncClient) -> int:
    created = await make_set(api)
    return int(created["id"])


async def store(api: httpx.AsyncClient, set_id: int, values: dict[str, Any], **extra: Any) -> dict[str, Any]:
    response = await api.post(f"/api/v1/sets/{set_id}/results", json={"values": values, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def count(ctx: AppContext, table: Any) -> int:
    with ctx.db.reading() as tx:
        return int(tx.execute(select(func.count()).select_from(table)).scalar_one())


async def test_create_coerces_and_presents(api: httpx.AsyncClient, set_id: int) -> None:
    created = await store(
        api,
        set_id,
        {
            "batchnumber_": "B-1234",
            "status_": "released",
            "ph_": "3.5",
            "expiry_": "2026-01-01T02:00:00+02:00",
        },
        date="2025-10-02T13:37:00Z",
    )
    assert created["set_id"] == set_id
    assert created["version"] == 1
    assert created["date"] == "2025-10-02T13:37:00Z"
    assert created["values"] == {
        "batchnumber_": "B-1234",
        "status_": "released",
        "ph_": 3.5,
        "expiry_": "2026-01-01T00:00:00Z",
    }
    assert created["created_by"] == created["updated_by"] == "alice"
    assert created["created_at"] == created["updated_at"]
    by_id = await store(api, set_id, {"batchnumber_": "B-2", "status_": 3, "ph_": "<321"})
    assert by_id["values"]["status_"] == "blocked"
    assert by_id["values"]["ph_"] == "<321"
    fetched = await api.get(f"/api/v1/sets/{set_id}/results/{created['id']}")
    assert fetched.json() == created
    assert fetched.headers["ETag"] == '"1"'


async def test_validation_errors_name_the_field(api: httpx.AsyncClient, set_id: int, ctx: AppContext) -> None:
    response = await api.post(
        f"/api/v1/sets/{set_id}/results", json={"values": {"batchnumber_": "B", "ph_": "abc", "nope_": 1}}
    )
    assert response.status_code == 422
    body = response.json()
    assert [d["field"] for d in body["details"]] == ["values.ph_", "values.nope_"]
    assert "a number" in body["details"][0]["error"]
    assert "no such field" in body["details"][1]["error"]
    assert "values.ph_" in body["error"]
    missing = await api.post(f"/api/v1/sets/{set_id}/results", json={"values": {"ph_": 3}})
    assert missing.status_code == 422
    assert missing.json()["details"] == [
        {"field": "values.batchnumber_", "error": "a value; this field is required"}
    ]
    bad_date = await api.post(
        f"/api/v1/sets/{set_id}/results", json={"values": {"batchnumber_": "B"}, "date": "x"}
    )
    assert bad_date.status_code == 422
    assert bad_date.json()["details"][0]["field"] == "date"
    assert count(ctx, results_table) == 0
    assert count(ctx, events) == 0


async def test_roles_and_set_permissions(
    api: httpx.AsyncClient,
    client: httpx.AsyncClient,
    set_id: int,
    viewer_key: str,
    editor_key: str,
    make_key: Any,
) -> None:
    url = f"/api/v1/sets/{set_id}/results"
    refused = await client.post(url, json={"values": {"batchnumber_": "B"}}, headers=auth(viewer_key))
    assert refused.status_code == 403
    created = await client.post(url, json={"values": {"batchnumber_": "B"}}, headers=auth(editor_key))
    assert created.status_code == 201
    assert created.json()["created_by"] == "erin"
    listed = await client.get(url, headers=auth(viewer_key))
    assert listed.status_code == 200 and len(listed.json()["items"]) == 1
    elsewhere = await make_set(api, {**BATCH_SET, "name": "Complaints"})
    other = make_key("editor", "other", [elsewhere["id"]])
    denied = await client.get(url, headers=auth(other))
    assert denied.status_code == 403
    assert denied.json()["error"] == "No read permission for this set"
    denied = await client.post(url, json={"values": {"batchnumber_": "B"}}, headers=auth(other))
    assert denied.status_code == 403
    assert denied.json()["error"] == "No write permission for this set"
    assert (await api.get(f"/api/v1/sets/{set_id + 100}/results")).status_code == 404


async def test_patch_merges_bumps_version_and_honours_if_match(api: httpx.AsyncClient, set_id: int) -> None:
    created = await store(api, set_id, {"batchnumber_": "B-1", "ph_": 7, "status_": "draft"})
    url = f"/api/v1/sets/{set_id}/results/{created['id']}"
    patched = await api.patch(
        url, json={"values": {"status_": "released", "ph_": None}}, headers={"If-Match": "1"}
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["version"] == 2
    assert body["values"] == {"batchnumber_": "B-1", "status_": "released", "ph_": None, "expiry_": None}
    assert patched.headers["ETag"] == '"2"'
    stale = await api.patch(url, json={"values": {"status_": "blocked"}}, headers={"If-Match": "1"})
    assert stale.status_code == 412
    assert "version 2" in stale.json()["error"]
    quoted = await api.patch(url, json={"values": {"status_": "blocked"}}, headers={"If-Match": '"2"'})
    assert quoted.status_code == 200 and quoted.json()["version"] == 3
    star = await api.patch(url, json={"values": {"ph_": 1}}, headers={"If-Match": "*"})
    assert star.status_code == 200 and star.json()["version"] == 4
    await api.patch(url, json={"values": {"ph_": None}}, headers={"If-Match": 'W/"4"'})
    bad = await api.patch(url, json={"values": {}}, headers={"If-Match": "three"})
    assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "If-Match"
    cleared = await api.patch(url, json={"values": {"batchnumber_": None}})
    assert cleared.status_code == 422
    assert cleared.json()["details"][0]["field"] == "values.batchnumber_"
    moved = await api.patch(url, json={"date": "2024-01-01T00:00:00Z"})
    assert moved.json()["date"] == "2024-01-01T00:00:00Z" and moved.json()["version"] == 6


async def test_patch_without_change_keeps_version_and_writes_no_event(
    api: httpx.AsyncClient, set_id: int, ctx: AppContext
) -> None:
    created = await store(api, set_id, {"batchnumber_": "B-1", "ph_": 7})
    url = f"/api/v1/sets/{set_id}/results/{created['id']}"
    same = await api.patch(url, json={"values": {"ph_": "7.0", "batchnumber_": "B-1", "status_": None}})
    assert same.status_code == 200
    assert same.json()["version"] == 1
    assert same.json()["updated_at"] == created["updated_at"]
    assert count(ctx, events) == 1


async def test_delete_and_if_match(api: httpx.AsyncClient, set_id: int, ctx: AppContext) -> None:
    created = await store(api, set_id, {"batchnumber_": "B-1"})
    url = f"/api/v1/sets/{set_id}/results/{created['id']}"
    assert (await api.delete(url, headers={"If-Match": "5"})).status_code == 412
    assert (await api.delete(url)).status_code == 204
    assert (await api.get(url)).status_code == 404
    assert (await api.delete(url)).status_code == 404
    assert (await api.patch(url, json={"values": {"ph_": 1}})).status_code == 404
    assert count(ctx, results_table) == 0
    assert count(ctx, events) == 2


async def test_cursor_pagination_and_filter(api: httpx.AsyncClient, set_id: int) -> None:
    statuses = ["draft", "released", "blocked", "released", "released"]
    ids = [
        (await store(api, set_id, {"batchnumber_": f"B-{i}", "status_": s, "ph_": i}))["id"]
        for i, s in enumerate(statuses)
    ]
    url = f"/api/v1/sets/{set_id}/results"
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get(url, params=params)).json()
        seen += [r["id"] for r in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids and pages == 3
    by_label = (await api.get(url, params={"filter": json.dumps({"status_": "released"})})).json()
    assert [r["id"] for r in by_label["items"]] == [ids[1], ids[3], ids[4]]
    by_id = (await api.get(url, params={"filter": json.dumps({"status_": 2, "ph_": "3"})})).json()
    assert [r["id"] for r in by_id["items"]] == [ids[3]]
    any_of = (await api.get(url, params={"filter": json.dumps({"status_": ["draft", "blocked"]})})).json()
    assert [r["id"] for r in any_of["items"]] == [ids[0], ids[2]]
    empty = (
        await api.get(url, params={"filter": json.dumps({"expiry_": None, "batchnumber_": "B-4"})})
    ).json()
    assert [r["id"] for r in empty["items"]] == [ids[4]]
    filtered_page = (
        await api.get(url, params={"filter": json.dumps({"status_": "released"}), "limit": 2})
    ).json()
    rest = (
        await api.get(
            url,
            params={"filter": json.dumps({"status_": "released"}), "cursor": filtered_page["next_cursor"]},
        )
    ).json()
    assert [r["id"] for r in rest["items"]] == [ids[4]] and rest["next_cursor"] is None
    unknown = await api.get(url, params={"filter": json.dumps({"colour_": "red"})})
    assert unknown.status_code == 422
    assert unknown.json()["details"][0]["field"] == "filter.colour_"
    not_json = await api.get(url, params={"filter": "status_=released"})
    assert not_json.status_code == 422 and not_json.json()["details"][0]["field"] == "filter"
    bad_cursor = await api.get(url, params={"cursor": "nonsense"})
    assert bad_cursor.status_code == 422 and bad_cursor.json()["details"][0]["field"] == "cursor"


async def test_filter_on_boolean_and_integer_fields(api: httpx.AsyncClient) -> None:
    created = await make_set(
        api,
        {
            "name": "Typed",
            "fields": [
                {"name": "ok_", "type": "boolean"},
                {"name": "n_", "type": "integer"},
                {"name": "day_", "type": "date"},
            ],
        },
    )
    url = f"/api/v1/sets/{created['id']}/results"
    first = await store(api, created["id"], {"ok_": "true", "n_": "4", "day_": "2025-01-02"})
    await store(api, created["id"], {"ok_": False, "n_": 5})
    assert first["values"] == {"ok_": True, "n_": 4, "day_": "2025-01-02"}
    found = (
        await api.get(url, params={"filter": json.dumps({"ok_": 1, "n_": 4.0, "day_": "2025-01-02"})})
    ).json()
    assert [r["id"] for r in found["items"]] == [first["id"]]


async def test_upsert_by_key_and_add_list_options(
    ctx: AppContext, api: httpx.AsyncClient, set_id: int
) -> None:
    first, created = results.upsert_by_key(
        ctx, set_id=set_id, key_field="batchnumber_", values={"batchnumber_": "K-1", "ph_": 1}, actor="erp"
    )
    assert created and first.version == 1
    again, created = results.upsert_by_key(
        ctx,
        set_id=set_id,
        key_field="batchnumber_",
        values={"batchnumber_": "K-1", "status_": "quarantine"},
        actor="erp",
        add_list_options=True,
    )
    assert not created and again.id == first.id and again.version == 2
    assert again.values == {"batchnumber_": "K-1", "ph_": 1.0, "status_": 4}
    fields = (await api.get(f"/api/v1/sets/{set_id}")).json()["fields"]
    assert fields[1]["options"][-1] == {"id": 4, "label": "quarantine", "active": True}
    with pytest.raises(NotFound, match="K-2"):
        results.upsert_by_key(
            ctx,
            set_id=set_id,
            key_field="batchnumber_",
            values={"batchnumber_": "K-2"},
            actor="erp",
            edit_only=True,
        )
    assert count(ctx, results_table) == 1


async def test_failure_after_the_write_leaves_nothing(
    api: httpx.AsyncClient, set_id: int, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant 1: the result, its event and what fan-out did commit together or not at all."""
    kept = await store(api, set_id, {"batchnumber_": "B-0"})
    before = (count(ctx, results_table), count(ctx, events))

    def boom(*_args: object) -> list[dict[str, object]]:
        raise RuntimeError("fan-out failed")

    # Both fan-out paths: one event at a time, and with the evaluations decided first.
    monkeypatch.setattr(fanout, "after_event", boom)
    monkeypatch.setattr(fanout, "fan_out_many", boom)
    with pytest.raises(RuntimeError):
        results.create_result(ctx, set_id=set_id, values={"batchnumber_": "B-1"}, actor="t")
    with pytest.raises(RuntimeError):
        results.update_result(ctx, set_id=set_id, result_id=kept["id"], values={"ph_": 9}, actor="t")
    with pytest.raises(RuntimeError):
        results.delete_result(ctx, set_id=set_id, result_id=kept["id"], actor="t")
    assert (count(ctx, results_table), count(ctx, events)) == before
    still = (await api.get(f"/api/v1/sets/{set_id}/results/{kept['id']}")).json()
    assert still["version"] == 1 and still["values"]["ph_"] is None


async def test_evaluations_from_fanout_are_stored(
    api: httpx.AsyncClient, set_id: int, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def decide(_tx: object, _ctx: object, event: Any) -> list[dict[str, object]]:
        seen.append(event.action)
        return [{"workflow_id": 4, "fired": True, "reason": "entry"}]

    created = await store(api, set_id, {"batchnumber_": "B-1"})
    # A deletion goes through the one-event path (it also drops the result's schedules).
    monkeypatch.setattr(fanout, "after_event", decide)
    deleted = await api.delete(f"/api/v1/sets/{set_id}/results/{created['id']}")
    assert deleted.status_code == 204
    listed = (await api.get("/api/v1/events", params={"result_id": created["id"]})).json()
    assert seen == ["deleted"]
    last = next(e for e in listed["items"] if e["action"] == "deleted")
    assert last["evaluations"] == [{"workflow_id": 4, "fired": True, "reason": "entry"}]


async def test_wrappers_wake_the_worker_when_the_change_queued_deliveries(
    ctx: AppContext, api: httpx.AsyncClient, set_id: int
) -> None:
    woken: list[int] = []
    ctx.wake_here = lambda: woken.append(1)
    results.create_result(ctx, set_id=set_id, values={"batchnumber_": "Q"}, actor="t")
    assert woken == []  # no workflow: nothing queued, nothing to wake
    await make_workflow(api, set_id, triggers={"entry": True, "modification": True})
    _, created = results.create_result(ctx, set_id=set_id, values={"batchnumber_": "B"}, actor="t")
    results.update_result(ctx, set_id=set_id, result_id=created.id, values={"ph_": 2}, actor="t")
    assert len(woken) == 2
    # storeResults goes through the same write wrapper: one wake-up for the whole call.
    batch = json.dumps([{"batchnumber_": "S-1"}, {"batchnumber_": "S-2"}])
    stored = await api.post("/api/storeResults", data={"setId": str(set_id), "results": batch})
    assert stored.status_code == 200, stored.text
    assert len(woken) == 3


async def test_service_sort_and_offset(api: httpx.AsyncClient, set_id: int, ctx: AppContext) -> None:
    """The compat API pages by offset and sorts by date or by a field; the id breaks ties, in the
    direction of the last sort key."""
    ph_values = [5, 1, None, 3, 1]
    ids = [
        (await store(api, set_id, {"batchnumber_": f"S-{i}", "ph_": ph}, date=f"2025-01-0{5 - i}T00:00:00Z"))[
            "id"
        ]
        for i, ph in enumerate(ph_values)
    ]
    _, by_date = results.list_results(ctx.db, set_id, sort=[("date", False)])
    assert [r.id for r in by_date] == list(reversed(ids))
    _, by_ph = results.list_results(ctx.db, set_id, sort=[("ph_", True)], filter_values={"ph_": [1, 3, 5]})
    assert [r.id for r in by_ph] == [ids[0], ids[3], ids[4], ids[1]]
    _, page = results.list_results(
        ctx.db, set_id, sort=[("ph_", True)], filter_values={"ph_": [1, 3, 5]}, offset=1, limit=2
    )
    assert [r.id for r in page] == [ids[3], ids[4]]
