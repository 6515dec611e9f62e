"""410 Gone: the delivery fails, the signal pauses, later events wait unsent, and resuming sends them."""

from __future__ import annotations

import asyncio

import httpx
from aiohttp import web

from qhook.context import AppContext
from tests.support.delivery import delivery, receiver, running_worker, until
from tests.support.workflows import add_result, deliveries_of, make_set, make_workflow


async def test_410_pauses_signal_until_resumed(
    api: httpx.AsyncClient, ctx: AppContext, viewer_key: str
) -> None:
    gone = True

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=410 if gone else 200, text="gone" if gone else "ok")

    async with receiver(handler) as erp:
        set_id = await make_set(api)
        workflow = await make_workflow(
            api, set_id, signals=[{"type": "webhook", "url": erp.url, "subject": "Batch {{ batchnumber_ }}"}]
        )
        signal_id = workflow["signals"][0]["id"]
        first = await add_result(api, set_id, batchnumber_="B-1")
        async with running_worker(ctx):
            await until(lambda: deliveries_of(ctx, first)[0].status == "failed")
            [failed] = deliveries_of(ctx, first)
            shown = (await api.get(f"/api/v1/workflows/{workflow['id']}")).json()
            assert "410" in shown["signals"][0]["paused_reason"]

            # While paused, new events are recorded but nothing is sent and no attempt is burnt.
            second = await add_result(api, set_id, batchnumber_="B-2")
            await asyncio.sleep(1.0)
            [waiting] = deliveries_of(ctx, second)
            row = delivery(ctx, waiting.id)
            assert row.status == "pending" and row.attempt_count == 0
            assert len(erp.received) == 1

            path = f"/api/v1/workflows/{workflow['id']}/signals/{signal_id}/resume"
            refused = await api.post(path, headers={"Authorization": f"Bearer {viewer_key}"})
            assert refused.status_code == 403
            gone = False
            resumed = await api.post(path)
            assert resumed.status_code == 200, resumed.text
            assert "410" in resumed.json()["was_paused_because"]
            await until(lambda: deliveries_of(ctx, second)[0].status == "succeeded")

    assert [r.body for r in erp.received][1:] == [deliveries_of(ctx, second)[0].body.encode()]
    assert delivery(ctx, failed.id).hint is not None and "paused" in delivery(ctx, failed.id).hint
    again = await api.post(path)
    assert again.status_code == 409
    audit = (await api.get("/api/v1/audit")).json()
    entries = audit["items"] if isinstance(audit, dict) else audit
    assert any(e["action"] == "signal.resume" for e in entries)
