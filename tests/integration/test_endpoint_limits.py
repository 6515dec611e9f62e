"""Per-host limits set through the API on SQLite and PostgreSQL: validated, audited, shown in
GET /endpoints, and honoured by a real worker sending to a real local receiver."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import httpx
from aiohttp import web

from qhook.context import AppContext
from qhook.domain.urls import origin_of
from tests.conftest import auth
from tests.integration.test_shared_endpoints import most_in_any_window
from tests.support.delivery import delivery, enqueue, make_signal, receiver, running_worker, until


def limits_url(origin: str) -> str:
    return f"/api/v1/endpoints/{quote(origin, safe='')}/limits"


async def listed(api: httpx.AsyncClient, origin: str) -> dict[str, object]:
    answer = await api.get("/api/v1/endpoints")
    assert answer.status_code == 200
    return next(e for e in answer.json() if e["origin"] == origin)


async def test_limits_are_validated_audited_and_listed(api: httpx.AsyncClient, viewer_key: str) -> None:
    origin = "https://erp.example.com:443"
    for body, field in (
        ({"rate_limit": "30 per minute"}, "rate_limit"),
        ({"rate_limit": "0/minute"}, "rate_limit"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": 101}, "max_in_flight"),
        ({"max_inflight": 3}, "max_inflight"),
    ):
        answer = await api.put(limits_url(origin), json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert field in answer.text
    assert (await api.put(limits_url("not an origin"), json={})).status_code == 422
    refused = await api.put(limits_url(origin), json={"max_in_flight": 2}, headers=auth(viewer_key))
    assert refused.status_code == 403

    done = await api.put(
        limits_url("https://erp.example.com"), json={"rate_limit": "30/min", "max_in_flight": 3}
    )
    assert done.status_code == 200, done.text
    assert done.json() == {"origin": origin, "rate_limit": "30/minute", "max_in_flight": 3}
    shown = await listed(api, origin)
    assert (shown["rate_limit"], shown["max_in_flight"], shown["state"]) == ("30/minute", 3, "ok")

    cleared = await api.put(limits_url(origin), json={"rate_limit": None, "max_in_flight": None})
    assert cleared.json() == {"origin": origin, "rate_limit": None, "max_in_flight": None}
    shown = await listed(api, origin)
    assert (shown["rate_limit"], shown["max_in_flight"]) == (None, None)

    entries = (await api.get("/api/v1/audit", params={"target_type": "endpoint"})).json()["items"]
    assert [(e["action"], e["target_id"], e["details"]) for e in entries] == [
        ("endpoint.limits", origin, {"rate_limit": None, "max_in_flight": None}),
        ("endpoint.limits", origin, {"rate_limit": "30/minute", "max_in_flight": 3}),
    ]


async def test_worker_honours_a_host_rate_limit_set_through_the_api(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    async with receiver() as rx:
        origin = origin_of(rx.url)
        answer = await api.put(limits_url(origin), json={"rate_limit": "4/second"})
        assert answer.status_code == 200, answer.text
        # Two signals that allow far more; the host's limit holds for both together.
        signals = [make_signal(ctx, rx.url, rate_limit="100/second"), make_signal(ctx, rx.url)]
        ids = [i for s in signals for i in enqueue(ctx, s, rx.url, ["{}"] * 6)]
        async with running_worker(ctx):
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids), timeout=20)
    assert len(rx.received) == 12
    assert most_in_any_window(rx.received, 1.0) <= 4
    assert all(delivery(ctx, i).attempt_count == 1 for i in ids)


async def test_worker_honours_a_host_concurrency_cap_set_through_the_api(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    in_flight = 0
    most = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return web.Response(text="ok")

    async with receiver(slow) as rx:
        answer = await api.put(limits_url(origin_of(rx.url)), json={"max_in_flight": 1})
        assert answer.status_code == 200, answer.text
        signal_id = make_signal(ctx, rx.url, max_in_flight=10)
        ids = enqueue(ctx, signal_id, rx.url, ["{}"] * 8)
        async with running_worker(ctx):
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids), timeout=20)
    assert len(rx.received) == 8
    assert most == 1
