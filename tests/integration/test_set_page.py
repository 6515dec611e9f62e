"""The UI's set page on SQLite and PostgreSQL: its results a page at a time, newest first, and
found by a field's value. It showed the newest 50 only; older ones were reached by typing URLs."""

from __future__ import annotations

import json
import re

import httpx

from qhook.context import AppContext
from qhook.services import sets as set_service
from tests.conftest import auth
from tests.integration.test_web import login, make_browser, person


def result_ids(page: httpx.Response) -> list[int]:
    return [int(n) for n in re.findall(r'<a href="/ui/sets/\d+/results/(\d+)">', page.text)]


async def test_results_page_by_page_and_found_by_value(
    ctx: AppContext, client: httpx.AsyncClient, admin_key: str
) -> None:
    set_id = set_service.create_set(
        ctx.db,
        name="Batch release",
        fields=[{"name": "batchnumber_", "type": "text"}, {"name": "ph_", "type": "number"}],
        actor="t",
    ).id
    batch = [{"batchnumber_": f"B-{n:03d}", "ph_": 7 if n % 2 else 6} for n in range(120)]
    stored = await client.post(
        "/api/storeResults",
        data={"setId": str(set_id), "results": json.dumps(batch)},
        headers=auth(admin_key),
    )
    assert stored.status_code == 200, stored.text
    ids = [r["@id"] for r in stored.json()["results"]]
    newest_first = sorted(ids, reverse=True)
    password = person(ctx, "vera", "viewer")
    async with make_browser(ctx) as browser:
        await login(browser, "vera", password)
        first = await browser.get(f"/ui/sets/{set_id}")
        assert result_ids(first) == newest_first[:50]
        assert f'href="/ui/sets/{set_id}?offset=50">Older »' in first.text and "« Newer" not in first.text
        last = await browser.get(f"/ui/sets/{set_id}", params={"offset": "100"})
        assert result_ids(last) == newest_first[100:]
        assert f'href="/ui/sets/{set_id}?offset=50">« Newer' in last.text and "Older »" not in last.text
        assert "101\u2013120, newest first" in last.text

        found = await browser.get(f"/ui/sets/{set_id}", params={"field": "batchnumber_", "value": "B-007"})
        assert result_ids(found) == [ids[7]]
        sevens = await browser.get(
            f"/ui/sets/{set_id}", params={"field": "ph_", "value": "7", "offset": "50"}
        )
        assert result_ids(sevens) == [i for i in newest_first if ids.index(i) % 2][50:]
        none = await browser.get(f"/ui/sets/{set_id}", params={"field": "batchnumber_", "value": "B-999"})
        assert result_ids(none) == [] and "No result of this set has batchnumber_ = B-999." in none.text

        for params, problem in (
            ({"offset": "-5"}, "offset: expected a whole number from 0 to 10,000,000, got &#39;-5&#39;"),
            ({"field": "ph_", "value": "acid"}, "ph_"),
            ({"field": "nope_", "value": "x"}, "nope_"),
        ):
            page = await browser.get(f"/ui/sets/{set_id}", params=params)
            assert page.status_code == 200
            assert re.search(r'<p class="error" role="alert">[^<]*' + re.escape(problem), page.text), (
                params,
                page.text,
            )
            assert result_ids(page) == newest_first[:50]  # the first page, unfiltered
