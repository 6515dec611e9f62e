"""An id is never given again, on SQLite as on PostgreSQL: delete the newest result, workflow or
set and the next one made gets a new id. On SQLite it got the deleted one's: receivers saw
"deleted @id 6" and then "new @id 6" for another batch, and the Hub mixed two workflows' history."""

from __future__ import annotations

import json

import httpx

from tests.conftest import auth
from tests.support.workflows import add_result, make_set, make_workflow


async def test_deleted_ids_do_not_come_back(api: httpx.AsyncClient, admin_key: str) -> None:
    set_id = await make_set(api)
    first = await add_result(api, set_id, batchnumber_="B-1")
    newest = await add_result(api, set_id, batchnumber_="B-2")
    assert (await api.delete(f"/api/v1/sets/{set_id}/results/{newest}")).status_code in (200, 204)
    again = await add_result(api, set_id, batchnumber_="B-3")
    assert again > newest > first

    # storeResults writes many rows at once with ids it works out itself: the same rule holds.
    assert (await api.delete(f"/api/v1/sets/{set_id}/results/{again}")).status_code in (200, 204)
    stored = await api.post(
        "/api/storeResults",
        data={
            "setId": str(set_id),
            "results": json.dumps([{"batchnumber_": "B-4"}, {"batchnumber_": "B-5"}]),
        },
        headers=auth(admin_key),
    )
    assert stored.status_code == 200, stored.text
    assert min(r["@id"] for r in stored.json()["results"]) > again

    workflow = await make_workflow(api, set_id)
    assert (await api.delete(f"/api/v1/workflows/{workflow['id']}")).status_code in (200, 204)
    other = await make_workflow(api, set_id, name="Another")
    assert other["id"] > workflow["id"]
    assert other["signals"][0]["id"] > workflow["signals"][0]["id"]

    spare = await make_set(api, name="Spare")
    assert (await api.delete(f"/api/v1/sets/{spare}")).status_code in (200, 204)
    assert await make_set(api, name="Complaints") > spare
