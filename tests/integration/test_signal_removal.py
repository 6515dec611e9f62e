"""Removing a signal (workflow PATCH) or a whole workflow (DELETE) cancels its unfinished deliveries.

Before, deliveries of a removed signal stayed pending or retrying for ever (the worker skips inactive
signals) and those of a deleted workflow failed one by one as "gone". Now both are cancelled in the
same transaction, with a hint saying why and when; SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from aiohttp import web
from sqlalchemy import select

from qhook.context import AppContext
from qhook.store.tables import deliveries
from tests.support.delivery import (
    attempts_of,
    delivery,
    receiver,
    running_worker,
    set_retrying,
    until,
)
from tests.support.workflows import add_result, make_set


def _deliveries_by_signal(ctx: AppContext) -> dict[int, list[Any]]:
    found: dict[int, list[Any]] = {}
    with ctx.db.reading() as tx:
        for row in tx.execute(select(deliveries).order_by(deliveries.c.id)):
            found.setdefault(row.signal_id, []).append(row)
    return found


async def _workflow(api: httpx.AsyncClient, set_id: int, *urls: str) -> dict[str, Any]:
    response = await api.post(
        "/api/v1/workflows",
        json={
            "name": "wf",
            "set_id": set_id,
            "triggers": {"entry": True},
            "signals": [{"type": "webhook", "url": url} for url in urls],
        },
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_patch_removing_a_signal_cancels_its_unfinished_deliveries(
    ctx: AppContext, api: httpx.AsyncClient
) -> None:
    set_id = await make_set(api)
    async with receiver() as kept_rx, receiver() as removed_rx:
        workflow = await _workflow(api, set_id, kept_rx.url, removed_rx.url)
        kept, removed = (s["id"] for s in workflow["signals"])
        await add_result(api, set_id, batchnumber_="B-1")
        await add_result(api, set_id, batchnumber_="B-2")
        set_retrying(ctx, [_deliveries_by_signal(ctx)[removed][1].id])  # one already tried once

        refused = await api.patch(
            f"/api/v1/workflows/{workflow['id']}", json={"signals": [{"id": kept}], "name": ""}
        )
        assert refused.status_code == 422  # nothing half-written: still pending/retrying
        assert {r.status for r in _deliveries_by_signal(ctx)[removed]} == {"pending", "retrying"}

        response = await api.patch(
            f"/api/v1/workflows/{workflow['id']}",
            json={"signals": [{"id": kept, "type": "webhook", "url": kept_rx.url}]},
        )
        assert response.status_code == 200, response.text
        gone = _deliveries_by_signal(ctx)[removed]
        assert [r.status for r in gone] == ["cancelled", "cancelled"]
        for row in gone:
            assert row.next_attempt_at is None
            assert row.hint.startswith(
                f"Cancelled: the signal was removed from workflow {workflow['id']} on "
            )
        assert [r.status for r in _deliveries_by_signal(ctx)[kept]] == ["pending", "pending"]

        async with running_worker(ctx):
            await until(lambda: all(r.status == "succeeded" for r in _deliveries_by_signal(ctx)[kept]))
            await asyncio.sleep(0.3)
    assert len(kept_rx.received) == 2 and removed_rx.received == []
    assert [r.status for r in _deliveries_by_signal(ctx)[removed]] == ["cancelled", "cancelled"]


async def test_delete_cancels_unfinished_deliveries_and_keeps_finished_ones(
    ctx: AppContext, api: httpx.AsyncClient
) -> None:
    set_id = await make_set(api)
    async with receiver() as rx:
        workflow = await _workflow(api, set_id, rx.url)
        [signal] = workflow["signals"]
        await add_result(api, set_id, batchnumber_="B-1")
        async with running_worker(ctx):
            await until(lambda: _deliveries_by_signal(ctx)[signal["id"]][0].status == "succeeded")
        await add_result(api, set_id, batchnumber_="B-2")
        await add_result(api, set_id, batchnumber_="B-3")
        set_retrying(ctx, [_deliveries_by_signal(ctx)[signal["id"]][2].id])

        response = await api.delete(f"/api/v1/workflows/{workflow['id']}")
        assert response.status_code == 204
        rows = _deliveries_by_signal(ctx)[signal["id"]]
        assert [r.status for r in rows] == ["succeeded", "cancelled", "cancelled"]
        assert rows[0].hint is None
        assert rows[1].hint.startswith(f"Cancelled: workflow {workflow['id']} was deleted on ")
        async with running_worker(ctx):
            await asyncio.sleep(0.5)
    assert len(rx.received) == 1
    assert [r.status for r in _deliveries_by_signal(ctx)[signal["id"]]] == [
        "succeeded",
        "cancelled",
        "cancelled",
    ]
    audit = (await api.get("/api/v1/audit", params={"action": "workflow.delete"})).json()
    items = audit["items"] if isinstance(audit, dict) else audit
    assert any(item.get("details", {}).get("cancelled_deliveries") == 2 for item in items), items


async def _remove_while_in_flight(
    ctx: AppContext, api: httpx.AsyncClient, rx: Any, release: asyncio.Event, set_id: int, sent_before: int
) -> Any:
    """Fire one delivery, remove its signal while the receiver holds the request, then let it answer."""
    release.clear()
    workflow = await _workflow(api, set_id, rx.url)
    [signal] = workflow["signals"]
    await add_result(api, set_id, batchnumber_=f"B-{sent_before}")
    [row] = _deliveries_by_signal(ctx)[signal["id"]]
    async with running_worker(ctx):
        await until(lambda: len(rx.received) == sent_before + 1)
        other = {"type": "webhook", "url": "http://127.0.0.1:9/other"}
        response = await api.patch(f"/api/v1/workflows/{workflow['id']}", json={"signals": [other]})
        assert response.status_code == 200, response.text
        assert delivery(ctx, row.id).status == "cancelled"
        release.set()
        final = await until(lambda: (d := delivery(ctx, row.id)).attempt_count == 1 and d)
    assert final.lease_owner is None and len(attempts_of(ctx, row.id)) == 1
    return final


async def test_a_delivery_in_flight_when_its_signal_is_removed_stays_cancelled_unless_delivered(
    ctx: AppContext, api: httpx.AsyncClient
) -> None:
    answers = [503, 200]
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=answers.pop(0))

    set_id = await make_set(api)
    async with receiver(handler) as rx:
        failed = await _remove_while_in_flight(ctx, api, rx, release, set_id, 0)
        delivered = await _remove_while_in_flight(ctx, api, rx, release, set_id, 1)
    # The 503 would otherwise have left it "retrying" for ever; a 2xx is the truth and wins.
    assert failed.status == "cancelled" and failed.next_attempt_at is None
    assert failed.hint.startswith("Cancelled: the signal was removed") and failed.last_status_code == 503
    assert delivered.status == "succeeded" and delivered.delivered_at is not None
