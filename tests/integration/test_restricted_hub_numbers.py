"""A user limited to some sets sees only their deliveries in GET /api/v1/endpoints and
GET /api/v1/stats (and the UI endpoints page), on SQLite and PostgreSQL; others see everything."""

from __future__ import annotations

from datetime import timedelta

import httpx

from qhook.clock import utcnow
from qhook.context import AppContext
from tests.conftest import auth
from tests.integration.test_web import login, make_browser, person
from tests.support.hub_data import add_attempt, add_delivery, set_endpoint_state

ERP = "https://erp.example.com:443"
LIMS = "https://lims.example.org:8443"
MES = "https://mes.example.com:443"


def fill(ctx: AppContext) -> None:
    """Set 1 sends to ERP; set 2 to ERP and LIMS; MES is only configured (paused)."""
    now = utcnow()
    for set_id, endpoint, status, code in (
        (1, ERP, "succeeded", 200),
        (1, ERP, "pending", None),
        (2, ERP, "failed", 500),
        (2, ERP, "pending", None),
        (2, ERP, "pending", None),
        (2, LIMS, "succeeded", 200),
    ):
        delivery = add_delivery(
            ctx.db, status=status, set_id=set_id, endpoint=endpoint, url=endpoint + "/hook"
        )
        if code is not None:
            add_attempt(ctx.db, delivery, started_at=now - timedelta(minutes=5), status_code=code)
    set_endpoint_state(ctx.db, MES, paused=True)


async def endpoints_for(http: httpx.AsyncClient, key: str) -> dict[str, dict[str, object]]:
    answer = await http.get("/api/v1/endpoints", headers=auth(key))
    assert answer.status_code == 200, answer.text
    return {e["origin"]: e for e in answer.json()}


def totals(stats: dict[str, object]) -> tuple[dict[str, int], int]:
    by_status: dict[str, int] = {}
    attempts = 0
    for hour in stats["hours"]:  # type: ignore[attr-defined]
        attempts += hour["attempts"]
        for status, count in hour["deliveries"].items():
            by_status[status] = by_status.get(status, 0) + count
    return {s: n for s, n in by_status.items() if n}, attempts


async def test_endpoints_and_stats_follow_the_set_restriction(
    client: httpx.AsyncClient, ctx: AppContext, viewer_key: str, make_key
) -> None:  # type: ignore[no-untyped-def]
    fill(ctx)
    limited = make_key("viewer", "lena", set_ids=[1])

    everything = await endpoints_for(client, viewer_key)
    assert set(everything) == {ERP, LIMS, MES}
    assert everything[ERP]["queue_depth"] == 3
    assert everything[ERP]["last_hour"] == {  # type: ignore[comparison-overlap]
        "attempts": 2,
        "success_rate": 0.5,
        "p50_ms": 100.0,
        "p95_ms": 100.0,
    }

    mine = await endpoints_for(client, limited)
    assert set(mine) == {ERP}  # LIMS and the configured MES carry none of set 1's deliveries
    assert mine[ERP]["queue_depth"] == 1
    assert mine[ERP]["last_hour"]["attempts"] == 1  # type: ignore[index]
    assert mine[ERP]["last_hour"]["success_rate"] == 1.0  # type: ignore[index]

    all_stats = (await client.get("/api/v1/stats", headers=auth(viewer_key))).json()
    assert totals(all_stats) == ({"succeeded": 2, "pending": 3, "failed": 1}, 3)
    my_stats = (await client.get("/api/v1/stats", headers=auth(limited))).json()
    assert totals(my_stats) == ({"succeeded": 1, "pending": 1}, 1)

    password = person(ctx, "luuk", "viewer", set_ids=[1])
    async with make_browser(ctx) as browser:
        await login(browser, "luuk", password, next_url="/ui/endpoints")
        page = (await browser.get("/ui/endpoints")).text
    assert ERP in page and LIMS not in page and MES not in page
