"""The Hub over deliveries a real worker sent to a real receiver on 127.0.0.1, on SQLite and
PostgreSQL: a 429 with Retry-After shows as a throttled endpoint with the hint's pause time, and a
replay by time window sends exactly the matching deliveries again, once, marked manual."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import quote

import httpx
from aiohttp import web
from sqlalchemy import update

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.domain.urls import origin_of
from qhook.store.tables import deliveries
from tests.support.delivery import (
    attempts_of,
    delivery,
    enqueue,
    make_signal,
    receiver,
    running_worker,
    until,
)


async def test_429_shows_as_throttled_endpoint_with_the_pause_in_the_hint(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "600"}, text="slow down")

    async with receiver(handler) as rx:
        signal_id = make_signal(ctx, rx.url)
        [delivery_id] = enqueue(ctx, signal_id, rx.url, ['{"batchnumber_": "B-1234"}'])
        async with running_worker(ctx):
            await until(lambda: delivery(ctx, delivery_id).status == "retrying")
    origin = origin_of(rx.url)

    found = {e["origin"]: e for e in (await api.get("/api/v1/endpoints")).json()}
    endpoint = found[origin]
    assert endpoint["state"] == "throttled" and endpoint["paused"] is False
    until_at = datetime.fromisoformat(endpoint["throttled_until"])
    assert timedelta(seconds=590) < until_at - utcnow() <= timedelta(seconds=600)
    assert endpoint["queue_depth"] == 1
    assert endpoint["last_hour"]["attempts"] == 1 and endpoint["last_hour"]["success_rate"] == 0.0
    assert endpoint["last_hour"]["p50_ms"] is not None

    item = (await api.get("/api/v1/deliveries", params={"q": "B-1234"})).json()["items"][0]
    assert item["id"] == delivery_id and item["status"] == "retrying" and item["last_status_code"] == 429
    expected = f"deliveries to it are paused until {until_at:%Y-%m-%d %H:%M:%S} UTC (Retry-After)"
    assert expected in item["hint"]
    detail = (await api.get(f"/api/v1/deliveries/{delivery_id}")).json()
    [attempt] = detail["attempts"]
    assert attempt["trigger"] == "scheduled" and attempt["response_body"] == "slow down"
    assert attempt["response_headers"]["Retry-After"] == "600" and expected in attempt["hint"]

    log = (await api.get(f"/api/v1/endpoints/{quote(origin, safe='')}/log")).json()["items"]
    assert [e["change"] for e in log] == ["throttled"]
    # An operator's pause wins over the throttle in the state shown; resume shows the throttle again.
    await api.post(f"/api/v1/endpoints/{quote(origin, safe='')}/pause")
    found = {e["origin"]: e for e in (await api.get("/api/v1/endpoints")).json()}
    assert found[origin]["state"] == "paused"
    await api.post(f"/api/v1/endpoints/{quote(origin, safe='')}/resume")
    found = {e["origin"]: e for e in (await api.get("/api/v1/endpoints")).json()}
    assert found[origin]["state"] == "throttled"
    # Resumed once more, with no pause left: the receiver's wait ends too.
    again = (await api.post(f"/api/v1/endpoints/{quote(origin, safe='')}/resume")).json()
    assert again["throttled_until"] is None
    found = {e["origin"]: e for e in (await api.get("/api/v1/endpoints")).json()}
    assert found[origin]["state"] == "ok"


async def test_replay_by_time_window_sends_the_matching_deliveries_once_more(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url)
        ids = enqueue(ctx, signal_id, rx.url, [f'{{"n": {i}}}' for i in range(6)])
        async with running_worker(ctx) as worker:
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids))
            # Spread them over the last six days: ids[i] was created i + 0.5 days ago.
            now = utcnow()
            with ctx.db.transaction() as tx:
                for i, delivery_id in enumerate(ids):
                    tx.execute(
                        update(deliveries)
                        .where(deliveries.c.id == delivery_id)
                        .values(created_at=now - timedelta(days=i + 0.5))
                    )
            window = {
                "since": (now - timedelta(days=4)).isoformat(),
                "until": (now - timedelta(days=1)).isoformat(),
                "status": "succeeded",  # delivered ones are sent again only when asked
            }
            first = await api.post("/api/v1/deliveries/replay", json=window)
            assert first.status_code == 200, first.text
            assert first.json() == {"queued": 3}  # ids[1], ids[2], ids[3]
            again = await api.post("/api/v1/deliveries/replay", json=window)
            assert again.json() == {"queued": 0}  # still queued: nothing twice
            worker.wake()
            await until(lambda: len(rx.received) == 9)
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids))

    replayed = [r.body for r in rx.received[6:]]
    assert sorted(replayed) == sorted(f'{{"n": {i}}}'.encode() for i in (1, 2, 3))
    original = {r.body: r.headers["webhook-id"] for r in rx.received[:6]}
    assert all(r.headers["webhook-id"] == original[r.body] for r in rx.received[6:])
    for i, delivery_id in enumerate(ids):
        triggers = [a.trigger for a in attempts_of(ctx, delivery_id)]
        assert triggers == (["scheduled", "replay"] if i in (1, 2, 3) else ["scheduled"])
    # A window that ends before it starts is refused, naming the field.
    bad = await api.post(
        "/api/v1/deliveries/replay", json={"since": window["until"], "until": window["since"]}
    )
    assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "until"
