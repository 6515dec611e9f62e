"""An endpoint's history on SQLite and PostgreSQL: GET /api/v1/endpoints/{origin}/log newest first
with cursor paging, and the last entries on the UI's endpoints page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx

from qhook.context import AppContext
from qhook.store import endpoints as endpoint_store
from tests.conftest import auth
from tests.integration.test_web import login, make_browser, person

ERP = "https://erp.example.com:443"
OTHER = "https://mes.example.com:443"
T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


def log_url(origin: str) -> str:
    return f"/api/v1/endpoints/{quote(origin, safe='')}/log"


def record_history(ctx: AppContext) -> None:
    with ctx.db.transaction() as tx:
        endpoint_store.throttle(tx, ERP, T0 + timedelta(minutes=5), T0, "Retry-After 300 s")
        endpoint_store.open_circuit(tx, ERP, T0 + timedelta(minutes=1), "10 of 10 attempts failed")
        endpoint_store.close_circuit(tx, ERP, T0 + timedelta(minutes=3), "probe succeeded")
        endpoint_store.open_circuit(tx, OTHER, T0, "12 of 12 attempts failed")


async def test_log_newest_first_with_paging(api: httpx.AsyncClient, ctx: AppContext, viewer_key: str) -> None:
    record_history(ctx)
    assert (await api.post(f"/api/v1/endpoints/{quote(ERP, safe='')}/pause")).status_code == 200
    assert (await api.post(f"/api/v1/endpoints/{quote(ERP, safe='')}/resume")).status_code == 200

    answer = await api.get(log_url("https://erp.example.com"), headers=auth(viewer_key))
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [i["change"] for i in items] == [
        "resumed",
        "paused",
        "circuit_closed",
        "circuit_open",
        "throttled",
    ]
    assert items[3]["detail"] == "10 of 10 attempts failed"
    assert items[3]["at"].startswith("2030-05-01T12:01:00")
    assert answer.json()["next_cursor"] is None

    first = (await api.get(log_url(ERP), params={"limit": 2})).json()
    assert [i["change"] for i in first["items"]] == ["resumed", "paused"]
    second = (await api.get(log_url(ERP), params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [i["change"] for i in second["items"]] == ["circuit_closed", "circuit_open"]
    third = (await api.get(log_url(ERP), params={"limit": 2, "cursor": second["next_cursor"]})).json()
    assert [i["change"] for i in third["items"]] == ["throttled"] and third["next_cursor"] is None

    other = (await api.get(log_url(OTHER))).json()["items"]
    assert [i["change"] for i in other] == ["circuit_open"]
    assert (await api.get(log_url("https://nobody.example.com"))).json()["items"] == []
    assert (await api.get(log_url("not an origin"))).status_code == 422
    assert (await api.get(log_url(ERP), params={"cursor": "garbage"})).status_code == 422
    assert (await api.get(log_url(ERP), params={"limit": 0})).status_code == 422


async def test_endpoints_page_shows_the_last_entries(api: httpx.AsyncClient, ctx: AppContext) -> None:
    record_history(ctx)
    limits = await api.put(
        f"/api/v1/endpoints/{quote(ERP, safe='')}/limits", json={"rate_limit": "30/minute"}
    )
    assert limits.status_code == 200
    password = person(ctx, "olga", "viewer")
    async with make_browser(ctx) as browser:
        await login(browser, "olga", password, next_url="/ui/endpoints")
        page = await browser.get("/ui/endpoints")
    assert page.status_code == 200
    html = page.text
    assert "Recent changes" in html
    assert "10 of 10 attempts failed" in html and "probe succeeded" in html
    assert "12 of 12 attempts failed" in html
    assert "limits: 30/minute" in html
    # Newest first within an endpoint.
    assert html.index("probe succeeded") < html.index("10 of 10 attempts failed")
    assert "Probe now" not in html  # a viewer steers nothing
    admin = person(ctx, "adam", "admin")
    async with make_browser(ctx) as browser:
        await login(browser, "adam", admin, next_url="/ui/endpoints")
        html = (await browser.get("/ui/endpoints")).text
    # The open circuit (OTHER) offers a probe; the closed one (ERP) does not.
    assert html.count('data-action="probe"') == 1
    assert f'data-action="probe" data-origin="{OTHER}" aria-label="Probe {OTHER} now"' in html


async def test_send_now_brings_forward_only_the_retries_within_the_dropped_wait(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    from sqlalchemy import select, update

    from qhook.clock import utcnow
    from qhook.store.tables import deliveries
    from tests.support.hub_data import add_delivery

    now = utcnow()
    until = now + timedelta(hours=1)
    within = add_delivery(ctx.db, status="retrying", endpoint=ERP)  # got the 503 asking for an hour
    later = add_delivery(ctx.db, status="retrying", endpoint=ERP)  # its own backoff ends after it
    elsewhere = add_delivery(ctx.db, status="retrying", endpoint=OTHER, url="https://mes.example.com/x")
    with ctx.db.transaction() as tx:
        for delivery_id, due in ((within, until), (later, until + timedelta(hours=2)), (elsewhere, until)):
            tx.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(next_attempt_at=due))
        endpoint_store.throttle(tx, ERP, until, now, "Retry-After 3600 s")

    answer = await api.post(f"/api/v1/endpoints/{quote(ERP, safe='')}/resume")
    assert answer.status_code == 200, answer.text
    with ctx.db.reading() as tx:
        due = {
            r.id: r.next_attempt_at for r in tx.execute(select(deliveries.c.id, deliveries.c.next_attempt_at))
        }
        [entry, *_] = endpoint_store.log_entries(tx, ERP)
    assert due[within] <= utcnow()
    assert due[later] == until + timedelta(hours=2)
    assert due[elsewhere] == until
    assert entry.change == "resumed" and entry.detail is not None
    assert entry.detail.endswith("is dropped and 1 retry waiting for it go now")


def test_a_burst_of_retry_after_answers_is_one_log_line(ctx: AppContext) -> None:
    """Ten sends in flight got the same 503 Retry-After: 120 and each wrote "throttled" (their
    waits differ by microseconds), pushing the endpoint's history off the page."""
    with ctx.db.transaction() as tx:
        for n in range(10):
            assert endpoint_store.throttle(tx, ERP, T0 + timedelta(seconds=120, microseconds=n * 300), T0)
        # A later answer asking for more is a line of its own; one asking for less changes nothing.
        assert endpoint_store.throttle(tx, ERP, T0 + timedelta(seconds=300), T0 + timedelta(seconds=1))
        assert not endpoint_store.throttle(tx, ERP, T0 + timedelta(seconds=200), T0 + timedelta(seconds=2))
        # After the wait ran out, a new one is logged, however close to the old end.
        assert endpoint_store.throttle(tx, ERP, T0 + timedelta(seconds=400), T0 + timedelta(seconds=350))
    with ctx.db.reading() as tx:
        entries = endpoint_store.log_entries(tx, ERP)
        state = endpoint_store.get(tx, ERP)
    assert [e.change for e in entries] == ["throttled"] * 3
    assert state is not None and state.throttled_until == T0 + timedelta(seconds=400)


async def test_pausing_an_origin_qhook_has_nothing_to_do_with_is_a_404(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """A typo in the origin printed "paused" and left a row in the endpoints list for good."""
    from tests.support.delivery import make_signal

    typo = "https://erp.exmaple.com:443"
    for action in ("pause", "resume", "probe"):
        answer = await api.post(f"/api/v1/endpoints/{quote(typo, safe='')}/{action}")
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"].startswith(f"No endpoint {typo}: no delivery and no active webhook")
    listed = [e["origin"] for e in (await api.get("/api/v1/endpoints")).json()]
    assert typo not in listed
    # An endpoint a signal points at may be paused before its first delivery.
    make_signal(ctx, "https://mes.example.com:8443/hooks")
    ahead = await api.post(f"/api/v1/endpoints/{quote('https://mes.example.com:8443', safe='')}/pause")
    assert ahead.status_code == 200, ahead.text
