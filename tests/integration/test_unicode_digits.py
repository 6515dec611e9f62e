"""Digits that str.isdigit takes and int() does not ("²", "①"): each place that read a number
from text with isdigit then int() answered a 500 for them. Now each is the usual 4xx."""

from __future__ import annotations

import httpx

from tests.support.workflows import add_result, make_set

SUPERSCRIPT = "\u00b2"


async def test_non_ascii_digits_are_refused_where_a_number_is_read(api: httpx.AsyncClient) -> None:
    set_id = await make_set(api)
    result_id = await add_result(api, set_id, batchnumber_="B-1")
    as_option = await api.post(f"/api/v1/sets/{set_id}/results", json={"values": {"status_": SUPERSCRIPT}})
    assert as_option.status_code == 422, as_option.text
    assert as_option.json()["details"][0]["field"] == "values.status_"
    version = await api.patch(
        f"/api/v1/sets/{set_id}/results/{result_id}",
        json={"values": {"batchnumber_": "B-2"}},
        headers={"If-Match": SUPERSCRIPT.encode("latin-1")},
    )
    assert version.status_code == 422 and version.json()["details"][0]["field"] == "If-Match"
    limit = await api.get("/api/getResults", params={"setId": str(set_id), "limit": SUPERSCRIPT})
    assert limit.status_code == 400 and limit.json()["error"].startswith("Invalid parameter: limit.")
    stored = await api.post(
        "/api/storeResults", data={"setId": str(set_id), "results": f'[{{"@id": "{SUPERSCRIPT}"}}]'}
    )
    assert stored.status_code == 400 and "@id: expected a result id" in stored.json()["error"]
