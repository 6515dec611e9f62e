"""A signal's URL changed (fixed or moved): what waits, and what is sent again, goes there; each
attempt keeps where it went. On SQLite and PostgreSQL, with a real worker and receivers."""

from __future__ import annotations

from typing import Any

import httpx
from aiohttp import web

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.store import endpoints as endpoint_store
from qhook.store import queue as queue_store
from tests.integration.test_web import login, make_browser, person
from tests.support.delivery import delivery, receiver, running_worker, until
from tests.support.workflows import add_result, deliveries_of, make_set, make_workflow


async def _not_found(request: web.Request) -> web.Response:
    return web.Response(status=404, text="no such route")


async def test_a_new_url_moves_waiting_deliveries_and_redelivery_and_replay_follow_it(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """Deliveries kept their URL for good: fixing a misspelt path or host left what was queued
    (held behind the old endpoint's open circuit, forever) and every redelivery going to the old
    address."""
    async with receiver(_not_found) as old, receiver() as new:
        set_id = await make_set(api)
        workflow = await make_workflow(
            api, set_id, signals=[{"type": "webhook", "url": old.url, "subject": "Batch {{ batchnumber_ }}"}]
        )
        first = [await add_result(api, set_id, batchnumber_=f"B-{n}") for n in (1, 2)]
        async with running_worker(ctx):
            await until(lambda: all(deliveries_of(ctx, r)[0].status == "failed" for r in first))
        waiting = await add_result(api, set_id, batchnumber_="B-3")
        [held] = deliveries_of(ctx, waiting)
        with ctx.db.transaction() as tx:  # the old endpoint stopped answering meanwhile
            endpoint_store.open_circuit(tx, held.endpoint, utcnow(), "10 of 10 attempts failed")
            queue_store.hold_endpoint(tx, held.endpoint, utcnow())
        assert delivery(ctx, held.id).status == "held"

        signal = (await api.get(f"/api/v1/workflows/{workflow['id']}")).json()["signals"][0]
        fixed = {**_editable(signal), "url": new.url}
        response = await api.patch(f"/api/v1/workflows/{workflow['id']}", json={"signals": [fixed]})
        assert response.status_code == 200, response.text

        moved = delivery(ctx, held.id)
        assert moved.url == new.url and moved.status == "pending" and moved.endpoint != held.endpoint
        failed = [deliveries_of(ctx, r)[0] for r in first]
        assert {d.url for d in failed} == {old.url}  # finished: they stay until sent again
        redelivered = await api.post(f"/api/v1/deliveries/{failed[0].id}/redeliver")
        assert redelivered.status_code == 200, redelivered.text
        assert redelivered.json()["url"] == new.url
        replayed = await api.post("/api/v1/deliveries/replay", json={"status": "failed"})
        assert replayed.status_code == 200 and replayed.json()["queued"] == 1, replayed.text

        async with running_worker(ctx):
            ids = [failed[0].id, failed[1].id, held.id]
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids))
    assert len(old.received) == 2 and len(new.received) == 3
    detail = (await api.get(f"/api/v1/deliveries/{failed[0].id}")).json()
    assert detail["request"]["url"] == new.url
    assert [(a["url"], a["status_code"]) for a in detail["attempts"]] == [(old.url, 404), (new.url, 200)]
    async with make_browser(ctx) as browser:
        await login(browser, "vic", person(ctx, "vic", "viewer"))
        page = (await browser.get(f"/ui/hub/{failed[0].id}")).text
    assert page.count(f"Sent to <code>{old.url}</code>") == 1  # the first attempt only
    assert f"POST {new.url}" in page


def _editable(signal: dict[str, Any]) -> dict[str, Any]:
    """The signal as a PATCH takes it back (what GET adds beyond its settings left out)."""
    return {k: v for k, v in signal.items() if k not in ("position", "active", "paused", "paused_reason")}
