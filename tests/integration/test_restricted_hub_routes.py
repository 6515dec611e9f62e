"""Every Integration Hub route follows a user's set restriction, on SQLite and PostgreSQL: the
endpoint log, pause/resume/limits, the log's filters, detail, redeliver, cancel and the UI pages.
(GET /api/v1/endpoints and /stats: test_restricted_hub_numbers.py.)"""

from __future__ import annotations

from urllib.parse import quote

import httpx
from sqlalchemy import select

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.store import endpoints as endpoint_store
from qhook.store import hub as hub_store
from qhook.store.tables import endpoint_log
from tests.conftest import auth
from tests.integration.test_web import login, make_browser, person
from tests.support.hub_data import add_delivery, ensure_sets, set_endpoint_state

ERP = "https://erp.example.com:443"
LIMS = "https://lims.example.org:8443"
MES = "https://mes.example.com:443"


def fill(ctx: AppContext) -> dict[str, int]:
    """Set 1 sends to ERP; set 2 to ERP and LIMS; MES is only configured. Each has some history."""
    made = {
        "mine": add_delivery(ctx.db, status="failed", set_id=1, endpoint=ERP),
        "mine_pending": add_delivery(ctx.db, status="pending", set_id=1, endpoint=ERP),
        "other_erp": add_delivery(ctx.db, status="failed", set_id=2, signal_id=2, workflow_id=2),
        "other_lims": add_delivery(
            ctx.db,
            status="pending",
            set_id=2,
            signal_id=2,
            workflow_id=2,
            endpoint=LIMS,
            url=LIMS + "/in",
        ),
    }
    set_endpoint_state(ctx.db, MES, paused=True)
    now = utcnow()
    with ctx.db.transaction() as tx:
        endpoint_store.open_circuit(tx, ERP, now, "10 of 10 attempts to ERP failed")
        endpoint_store.open_circuit(tx, LIMS, now, "12 of 12 attempts to LIMS failed")
        endpoint_store.log(tx, MES, "limits", "secret-ish MES history", now)
    return made


def log_url(origin: str) -> str:
    return f"/api/v1/endpoints/{quote(origin, safe='')}/log"


async def test_endpoint_log_shows_only_origins_of_the_users_sets(
    client: httpx.AsyncClient, ctx: AppContext, viewer_key: str, make_key
) -> None:  # type: ignore[no-untyped-def]
    fill(ctx)
    ensure_sets(ctx.db, 3)
    limited = make_key("viewer", "lena", set_ids=[1])
    elsewhere = make_key("viewer", "otto", set_ids=[3])  # a set without any delivery

    for origin, detail in ((ERP, "ERP"), (LIMS, "LIMS"), (MES, "MES")):
        page = (await client.get(log_url(origin), headers=auth(viewer_key))).json()
        assert len(page["items"]) == 1 and detail in page["items"][0]["detail"]

    mine = await client.get(log_url(ERP), headers=auth(limited))
    assert mine.status_code == 200, mine.text
    assert [i["detail"] for i in mine.json()["items"]] == ["10 of 10 attempts to ERP failed"]
    for origin in (LIMS, MES, "https://nobody.example.com"):
        hidden = await client.get(log_url(origin), headers=auth(limited))
        assert hidden.status_code == 200, hidden.text
        assert hidden.json() == {"items": [], "next_cursor": None}
    for origin in (ERP, LIMS, MES):
        assert (await client.get(log_url(origin), headers=auth(elsewhere))).json()["items"] == []
    # Bad input is still refused first, restricted or not.
    assert (await client.get(log_url("not an origin"), headers=auth(limited))).status_code == 422


async def test_restricted_admin_steers_only_origins_of_their_sets(
    client: httpx.AsyncClient, ctx: AppContext, make_key
) -> None:  # type: ignore[no-untyped-def]
    fill(ctx)
    limited = make_key("admin", "ada", set_ids=[1])
    headers = auth(limited)

    for origin in (LIMS, MES, "https://new.example.com"):
        path = f"/api/v1/endpoints/{quote(origin, safe='')}"
        for verb in ("pause", "resume"):
            refused = await client.post(f"{path}/{verb}", headers=headers)
            assert refused.status_code == 403, refused.text
            assert "no delivery of your sets goes there" in refused.json()["error"]
        limits = await client.put(f"{path}/limits", json={"rate_limit": "5/second"}, headers=headers)
        assert limits.status_code == 403, limits.text
    with ctx.db.reading() as tx:
        lims = hub_store.endpoint_row(tx, LIMS)
        mes = hub_store.endpoint_row(tx, MES)
        new = hub_store.endpoint_row(tx, "https://new.example.com:443")
        changes = list(
            tx.execute(select(endpoint_log.c.change).where(endpoint_log.c.origin == LIMS)).scalars()
        )
    assert lims is not None and not lims.paused and lims.rate_limit is None
    assert mes is not None and mes.paused and mes.rate_limit is None
    assert new is None and changes == ["circuit_open"]

    # ERP takes set 2's deliveries too: pausing it would stop them. Sending one delivery there by
    # hand made any shared endpoint the limited admin's to pause.
    shared = f"/api/v1/endpoints/{quote(ERP, safe='')}"
    for refused in (
        await client.post(f"{shared}/pause", headers=headers),
        await client.put(f"{shared}/limits", json={"max_in_flight": 3}, headers=headers),
    ):
        assert refused.status_code == 403 and "other sets' deliveries go there too" in refused.json()["error"]

    own = "https://plant1.example.com:443"
    add_delivery(ctx.db, status="pending", set_id=1, endpoint=own, url=own + "/in")
    path = f"/api/v1/endpoints/{quote(own, safe='')}"
    paused = await client.post(f"{path}/pause", headers=headers)
    assert paused.status_code == 200 and paused.json() == {
        "origin": own,
        "paused": True,
        "throttled_until": None,
    }
    limits = await client.put(f"{path}/limits", json={"max_in_flight": 3}, headers=headers)
    assert limits.status_code == 200 and limits.json()["max_in_flight"] == 3
    resumed = await client.post(f"{path}/resume", headers=headers)
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    log = (await client.get(log_url(own), headers=headers)).json()["items"]
    assert [i["change"] for i in log][:3] == ["resumed", "limits", "paused"]


async def test_log_detail_and_changes_of_other_sets_are_out_of_reach(
    client: httpx.AsyncClient, ctx: AppContext, make_key
) -> None:  # type: ignore[no-untyped-def]
    made = fill(ctx)
    headers = auth(make_key("editor", "sam", set_ids=[1]))

    async def ids(**params: object) -> list[int]:
        query = {k: str(v) for k, v in params.items()}
        answer = await client.get("/api/v1/deliveries", params=query, headers=headers)
        assert answer.status_code == 200, answer.text
        return [i["id"] for i in answer.json()["items"]]

    assert await ids() == [made["mine_pending"], made["mine"]]
    # Filters never widen the restriction.
    assert await ids(set_id=2) == []
    assert await ids(endpoint=LIMS) == []
    assert await ids(workflow_id=2) == []
    assert await ids(status="failed") == [made["mine"]]
    assert await ids(q="B-") == [made["mine_pending"], made["mine"]]

    for key in ("other_erp", "other_lims"):
        other = made[key]
        assert (await client.get(f"/api/v1/deliveries/{other}", headers=headers)).status_code == 404
        for verb in ("redeliver", "cancel"):
            answer = await client.post(f"/api/v1/deliveries/{other}/{verb}", headers=headers)
            assert answer.status_code == 404, answer.text
    replayed = await client.post("/api/v1/deliveries/replay", json={"endpoint": ERP}, headers=headers)
    assert replayed.json() == {"queued": 1}
    with ctx.db.reading() as tx:
        status = {k: hub_store.get_delivery(tx, i)[0].status for k, i in made.items()}  # type: ignore[index]
    assert status == {
        "mine": "pending",
        "mine_pending": "pending",
        "other_erp": "failed",
        "other_lims": "pending",
    }
    cancelled = await client.post(f"/api/v1/deliveries/{made['mine_pending']}/cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


async def test_ui_hub_pages_follow_the_restriction(ctx: AppContext) -> None:
    made = fill(ctx)
    password = person(ctx, "luuk", "viewer", set_ids=[1])
    async with make_browser(ctx) as browser:
        await login(browser, "luuk", password, next_url="/ui/hub")
        listing = (await browser.get("/ui/hub")).text
        mine = await browser.get(f"/ui/hub/{made['mine']}")
        other = await browser.get(f"/ui/hub/{made['other_lims']}")
        endpoints = (await browser.get("/ui/endpoints")).text
    assert f"/ui/hub/{made['mine']}" in listing
    assert f"/ui/hub/{made['other_erp']}" not in listing and LIMS not in listing
    assert mine.status_code == 200 and other.status_code == 404
    assert "10 of 10 attempts to ERP failed" in endpoints
    assert "LIMS failed" not in endpoints and "MES history" not in endpoints
