"""An id beyond what its column holds is a 4xx naming the parameter, on both databases.

Sets, results, workflows, signals, users and auth profiles have INTEGER ids (PostgreSQL compares a
parameter with them as an INTEGER: 2^31 and up was a 500 there); events, deliveries and captures
have BIGINT ids (beyond 2^63 - 1 either database's driver failed: a 500 on SQLite too). An id in
range that names nothing is still a 404.
"""

from __future__ import annotations

import httpx
import pytest

from qhook.domain.ids import encode_cursor
from tests.support.workflows import RECEIVER, make_set

INTEGER_PAST = 2**31
BIGINT_PAST = 2**63


def _field(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    return str(response.json()["details"][0]["field"])


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (f"/api/v1/sets/{INTEGER_PAST}", "set_id"),
        (f"/api/v1/sets/1/results/{INTEGER_PAST}", "result_id"),
        (f"/api/v1/workflows/{INTEGER_PAST}", "workflow_id"),
        (f"/api/v1/users/{INTEGER_PAST}", "user_id"),
        (f"/api/v1/deliveries/{BIGINT_PAST}", "delivery_id"),
        ("/api/v1/sets/0", "set_id"),
    ],
)
async def test_an_id_out_of_range_in_the_path(api: httpx.AsyncClient, path: str, field: str) -> None:
    assert _field(await api.get(path)) == field


async def test_an_id_in_range_that_names_nothing_is_a_404(api: httpx.AsyncClient) -> None:
    assert (await api.get(f"/api/v1/deliveries/{INTEGER_PAST}")).status_code == 404
    assert (await api.get(f"/api/v1/sets/{INTEGER_PAST - 1}")).status_code == 404


async def test_an_id_out_of_range_in_the_query(api: httpx.AsyncClient) -> None:
    listed = await api.get("/api/v1/deliveries", params={"workflow_id": INTEGER_PAST})
    assert _field(listed) == "workflow_id"
    set_id = await make_set(api)
    forged = await api.get(f"/api/v1/sets/{set_id}/results", params={"cursor": encode_cursor(INTEGER_PAST)})
    assert _field(forged) == "cursor"
    far = await api.get("/api/v1/deliveries", params={"cursor": encode_cursor(BIGINT_PAST)})
    assert _field(far) == "cursor"
    near = await api.get("/api/v1/deliveries", params={"cursor": encode_cursor(INTEGER_PAST)})
    assert near.status_code == 200 and near.json()["items"] == []


@pytest.mark.parametrize("name", ["event_id", "event_uid"])
async def test_an_event_id_beyond_the_column_names_nothing(api: httpx.AsyncClient, name: str) -> None:
    """The Hub's event filter took any str.isdigit text to int(): past 2^63 a 500 from the driver,
    "²" a ValueError (a 500), an Arabic-Indic one quietly event 1."""
    for text in (str(BIGINT_PAST), "9" * 30):
        found = await api.get("/api/v1/deliveries", params={name: text})
        assert found.status_code == 200 and found.json()["items"] == [], found.text
    for text in ("²", "\u0661"):
        assert _field(await api.get("/api/v1/deliveries", params={name: text})) == name


async def test_an_id_out_of_range_in_a_body(api: httpx.AsyncClient) -> None:
    set_id = await make_set(api)
    signal = {"type": "webhook", "url": RECEIVER}
    workflow = {"name": "w", "set_id": INTEGER_PAST, "triggers": {"entry": True}, "signals": [signal]}
    assert _field(await api.post("/api/v1/workflows", json=workflow)) == "set_id"
    profiled = {**workflow, "set_id": set_id, "signals": [{**signal, "auth_profile_id": INTEGER_PAST}]}
    assert _field(await api.post("/api/v1/workflows", json=profiled)) == "signals[0].auth_profile_id"
    user = {"name": "lim", "role": "viewer", "password": "password-lim-1", "set_ids": [INTEGER_PAST]}
    assert _field(await api.post("/api/v1/users", json=user)) == "set_ids.0"
    assert (
        _field(await api.post("/api/v1/deliveries/replay", json={"workflow_id": INTEGER_PAST}))
        == "workflow_id"
    )
    manual = await api.post(
        "/api/v1/workflows", json={**workflow, "set_id": set_id, "triggers": {"manual": True}}
    )
    assert manual.status_code == 201, manual.text
    run = await api.post(f"/api/v1/workflows/{manual.json()['id']}/run", json={"result_ids": [INTEGER_PAST]})
    assert _field(run) == "result_ids.0"


async def test_an_id_out_of_range_in_the_compat_api(api: httpx.AsyncClient) -> None:
    set_id = await make_set(api)
    missing = await api.get("/api/getResults", params={"setId": str(INTEGER_PAST)})
    assert missing.status_code == 400
    assert missing.json()["error"].startswith("Invalid parameter: setId. Expected a number between 1 and")
    paged = await api.get("/api/getResults", params={"setId": str(set_id), "offset": str(INTEGER_PAST)})
    assert paged.status_code == 400 and paged.json()["error"].startswith("Invalid parameter: offset.")
    stored = await api.post(
        "/api/storeResults", json={"setId": set_id, "results": [{"@id": INTEGER_PAST, "batchnumber_": "B-1"}]}
    )
    assert stored.status_code == 400 and "@id: expected a result id" in stored.json()["error"]
