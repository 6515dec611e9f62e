"""The Integration Hub on SQLite and PostgreSQL: the log and its filters, paging, redeliver, replay,
cancel, endpoints, stats, retention, audit, and no secret in any answer."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, select, update

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.services import hub
from qhook.store import hub as hub_store
from qhook.store.tables import attempts, deliveries, endpoint_log, signals
from tests.conftest import auth
from tests.support.hub_data import add_attempt, add_delivery, days_ago, ensure_sets, set_endpoint_state

ITEM_FIELDS = {
    "id",
    "webhook_id",
    "status",
    "workflow_id",
    "signal_id",
    "set_id",
    "result_id",
    "event_id",
    "event_uid",
    "action",
    "url",
    "attempt_count",
    "next_attempt_at",
    "last_status_code",
    "last_error_kind",
    "hint",
    "created_at",
    "delivered_at",
    "is_test",
}
ERP = "https://erp.example.com:443"
LIMS = "https://lims.example.org:8443"


async def ids_of(api: httpx.AsyncClient, **params: object) -> list[int]:
    response = await api.get("/api/v1/deliveries", params={k: str(v) for k, v in params.items()})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_every_filter(api: httpx.AsyncClient, ctx: AppContext) -> None:
    db = ctx.db
    a = add_delivery(db, status="failed", workflow_id=1, signal_id=11, set_id=1, result_id=101)
    b = add_delivery(
        db, status="succeeded", workflow_id=2, signal_id=12, set_id=1, result_id=102, action="modified"
    )
    c = add_delivery(
        db,
        status="retrying",
        workflow_id=2,
        signal_id=13,
        set_id=2,
        result_id=103,
        action="deleted",
        url="https://lims.example.org:8443/in",
        endpoint=LIMS,
        created_at=days_ago(3),
    )
    d = add_delivery(
        db, status="pending", workflow_id=3, signal_id=11, set_id=2, result_id=101, created_at=days_ago(1)
    )

    assert await ids_of(api) == [d, c, b, a]
    assert await ids_of(api, status="failed") == [a]
    assert await ids_of(api, status="pending") == [d]
    assert await ids_of(api, workflow_id=2) == [c, b]
    assert await ids_of(api, signal_id=11) == [d, a]
    assert await ids_of(api, set_id=2) == [d, c]
    assert await ids_of(api, result_id=101) == [d, a]
    assert await ids_of(api, endpoint=LIMS) == [c]
    # An origin without its default port is the same endpoint.
    assert await ids_of(api, endpoint="https://erp.example.com") == [d, b, a]
    assert await ids_of(api, action="modified") == [b]
    # With since/until the log is newest first by time (created_at, then id): d was written last
    # but happened a day ago.
    assert await ids_of(api, since=days_ago(2).isoformat()) == [b, a, d]
    assert await ids_of(api, until=days_ago(0.5).isoformat()) == [d, c]
    assert await ids_of(api, since=days_ago(2).isoformat(), until=days_ago(0.5).isoformat()) == [d]
    assert await ids_of(api, workflow_id=2, status="retrying", set_id=2) == [c]

    bad = await api.get("/api/v1/deliveries", params={"status": "lost"})
    assert bad.status_code == 422
    assert "status" in bad.json()["error"] and "succeeded" in bad.json()["error"]
    bad = await api.get("/api/v1/deliveries", params={"endpoint": "not a url"})
    assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "endpoint"
    bad = await api.get("/api/v1/deliveries", params={"cursor": "garbage!"})
    assert bad.status_code == 422 and "cursor" in bad.json()["error"]


async def test_items_have_exactly_the_listed_fields(api: httpx.AsyncClient, ctx: AppContext) -> None:
    add_delivery(ctx.db, status="failed", hint="Check the URL.", last_status_code=404)
    item = (await api.get("/api/v1/deliveries")).json()["items"][0]
    assert set(item) == ITEM_FIELDS
    assert item["hint"] == "Check the URL." and item["last_status_code"] == 404
    assert item["webhook_id"].startswith("msg_")


async def test_q_searches_the_body(api: httpx.AsyncClient, ctx: AppContext) -> None:
    db = ctx.db
    wanted = add_delivery(db, body=json.dumps({"batchnumber_": "B-1234", "status_": "released"}))
    add_delivery(db, body=json.dumps({"batchnumber_": "B-9999"}))
    add_delivery(db, body=json.dumps({"batchnumber_": "C-1234"}))
    also = add_delivery(db, body=json.dumps({"note": "see b-1234 too"}))
    assert await ids_of(api, q="B-1234") == [also, wanted]
    # LIKE wildcards in q are literal characters.
    assert await ids_of(api, q="B_1234") == []
    assert await ids_of(api, q="%") == []
    assert await ids_of(api, q="B-1234", status="pending") == [also, wanted]


async def test_cursor_paging_has_no_gaps_or_repeats(api: httpx.AsyncClient, ctx: AppContext) -> None:
    made = [add_delivery(ctx.db, status="failed" if i % 3 else "succeeded") for i in range(23)]
    for params, expected in (({}, made), ({"status": "failed"}, [m for i, m in enumerate(made) if i % 3])):
        seen: list[int] = []
        cursor = None
        pages = 0
        while True:
            query = {**params, "limit": "4", **({"cursor": cursor} if cursor else {})}
            page = (await api.get("/api/v1/deliveries", params=query)).json()
            seen += [item["id"] for item in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(expected, reverse=True)
        assert pages == -(-len(expected) // 4)
    # A row added while paging appears on a fresh first page, never inside the walk.
    first = (await api.get("/api/v1/deliveries", params={"limit": "5"})).json()
    newer = add_delivery(ctx.db)
    second = (
        await api.get("/api/v1/deliveries", params={"limit": "5", "cursor": first["next_cursor"]})
    ).json()
    assert newer not in [i["id"] for i in second["items"]]
    assert [i["id"] for i in second["items"]] == sorted(made, reverse=True)[5:10]
    assert (await api.get("/api/v1/deliveries", params={"limit": "0"})).status_code == 422


async def test_detail_has_request_and_attempts(api: httpx.AsyncClient, ctx: AppContext) -> None:
    body = json.dumps({"batchnumber_": "B-1234"})
    delivery_id = add_delivery(ctx.db, status="retrying", body=body, attempt_count=2)
    sent = {"content-type": "application/json", "authorization": "[redacted]", "webhook-id": "msg_x"}
    add_attempt(
        ctx.db, delivery_id, number=1, status_code=500, hint="The receiver failed.", request_headers=sent
    )
    add_attempt(
        ctx.db,
        delivery_id,
        number=2,
        status_code=None,
        error_kind="timeout",
        duration_ms=15000,
        trigger="manual",
    )
    response = await api.get(f"/api/v1/deliveries/{delivery_id}")
    assert response.status_code == 200
    found = response.json()
    assert set(found) == ITEM_FIELDS | {"request", "attempts", "waiting"}
    assert found["request"]["body"] == body
    assert found["request"]["url"] == "https://erp.example.com/hooks/qc"
    assert [a["number"] for a in found["attempts"]] == [1, 2]
    assert found["attempts"][0]["hint"] == "The receiver failed."
    assert found["attempts"][0]["status_code"] == 500
    assert found["attempts"][0]["request_headers"]["authorization"] == "[redacted]"
    assert found["attempts"][1]["trigger"] == "manual"
    assert found["attempts"][1]["error_kind"] == "timeout"
    assert found["attempts"][1]["duration_ms"] == 15000
    assert (await api.get("/api/v1/deliveries/999999")).status_code == 404


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("failed", "pending"),
        ("succeeded", "pending"),
        ("retrying", "retrying"),
        ("pending", 409),
        ("cancelled", 409),
        ("held", 409),
    ],
)
async def test_redeliver_on_each_status(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str, status: str, expected: str | int
) -> None:
    woken: list[bool] = []
    ctx.wake = lambda: woken.append(True)
    later = utcnow() + timedelta(hours=3)
    delivery_id = add_delivery(
        ctx.db, status=status, created_at=days_ago(1), hint="Gave up: after 1 attempt."
    )
    with ctx.db.transaction() as tx:
        before = hub_store.get_delivery(tx, delivery_id)
    assert before is not None
    if status == "retrying":
        with ctx.db.transaction() as tx:  # a retry due in three hours
            tx.execute(
                deliveries.update().where(deliveries.c.id == delivery_id).values(next_attempt_at=later)
            )
    response = await client.post(f"/api/v1/deliveries/{delivery_id}/redeliver", headers=auth(editor_key))
    with ctx.db.reading() as tx:
        after = hub_store.get_delivery(tx, delivery_id)
    assert after is not None
    if isinstance(expected, int):
        assert response.status_code == expected
        assert f"is {status} and cannot be redelivered" in response.json()["error"]
        assert after[0].status == status and not woken
        return
    assert response.status_code == 200, response.text
    assert response.json()["status"] == expected
    record, body = after
    assert record.status == expected
    assert record.next_trigger == "manual"
    assert record.next_attempt_at is not None and record.next_attempt_at <= utcnow()
    assert record.webhook_id == before[0].webhook_id and body == before[1]
    # Sent again, it starts afresh: the earlier outcome's hint and delivery time stay on its attempts.
    assert record.hint is None and record.delivered_at is None
    assert woken == [True]


async def test_redeliver_refuses_a_delivery_being_sent_and_viewers(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str, viewer_key: str
) -> None:
    busy = add_delivery(ctx.db, status="retrying", lease_expires_at=utcnow() + timedelta(minutes=2))
    response = await client.post(f"/api/v1/deliveries/{busy}/redeliver", headers=auth(editor_key))
    assert response.status_code == 409 and "being sent right now" in response.json()["error"]
    done = add_delivery(ctx.db, status="failed")
    response = await client.post(f"/api/v1/deliveries/{done}/redeliver", headers=auth(viewer_key))
    assert response.status_code == 403
    assert (await client.get("/api/v1/deliveries", headers=auth(viewer_key))).status_code == 200


async def test_replay_is_idempotent(api: httpx.AsyncClient, ctx: AppContext) -> None:
    woken: list[bool] = []
    ctx.wake = lambda: woken.append(True)
    failed = [add_delivery(ctx.db, status="failed", workflow_id=7) for _ in range(3)]
    add_delivery(ctx.db, status="failed", workflow_id=8)
    add_delivery(ctx.db, status="succeeded", workflow_id=7)
    add_delivery(ctx.db, status="pending", workflow_id=7)
    response = await api.post("/api/v1/deliveries/replay", json={"status": "failed", "workflow_id": 7})
    assert response.status_code == 200 and response.json() == {"queued": 3}
    assert woken == [True]
    again = await api.post("/api/v1/deliveries/replay", json={"status": "failed", "workflow_id": 7})
    assert again.json() == {"queued": 0}
    assert sorted(await ids_of(api, workflow_id=7, status="pending")) == [*failed, failed[-1] + 3]
    with ctx.db.reading() as tx:
        assert {hub_store.get_delivery(tx, i)[0].next_trigger for i in failed} == {"replay"}  # type: ignore[index]
    # Without a status: failed ones only (the succeeded one is not sent to the ERP again); both when
    # asked. The pending ones stay as they are.
    assert (await api.post("/api/v1/deliveries/replay", json={"workflow_id": 7})).json() == {"queued": 0}
    both = {"workflow_id": 7, "status": "failed, succeeded"}
    assert (await api.post("/api/v1/deliveries/replay", json=both)).json() == {"queued": 1}
    assert (await api.post("/api/v1/deliveries/replay", json=both)).json() == {"queued": 0}
    by_endpoint = await api.post("/api/v1/deliveries/replay", json={"endpoint": "https://erp.example.com"})
    assert by_endpoint.json() == {"queued": 1}

    empty = await api.post("/api/v1/deliveries/replay", json={})
    assert empty.status_code == 422 and "at least one filter" in empty.json()["error"]
    for blank in ("", " ", ","):  # no filter either: it replayed every failed delivery
        refused = await api.post("/api/v1/deliveries/replay", json={"status": blank, "dry_run": True})
        assert refused.status_code == 422 and "at least one filter" in refused.json()["error"], blank
    queued = await api.post("/api/v1/deliveries/replay", json={"status": "pending"})
    assert queued.status_code == 422 and queued.json()["details"][0]["field"] == "status"
    unknown = await api.post("/api/v1/deliveries/replay", json={"set": 1})
    assert unknown.status_code == 422


async def test_replay_takes_the_lists_filters_and_counts_first(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """The Hub's replay form dropped set, result, action and text filters: the replay covered
    every set. The API takes them all, and a dry run counts without queueing."""
    mine = add_delivery(ctx.db, status="failed", set_id=2, workflow_id=2, signal_id=2, body='{"lot": "B-77"}')
    add_delivery(ctx.db, status="failed", set_id=3, workflow_id=3, signal_id=3, body='{"lot": "B-77"}')
    add_delivery(ctx.db, status="failed", set_id=2, workflow_id=2, signal_id=2, action="deleted")
    wanted = {"set_id": 2, "action": "new", "q": "B-77"}
    counted = await api.post("/api/v1/deliveries/replay", json={**wanted, "dry_run": True})
    assert counted.status_code == 200 and counted.json() == {"queued": 0, "matched": 1}
    assert await ids_of(api, status="pending") == []  # a dry run queues nothing
    done = await api.post("/api/v1/deliveries/replay", json=wanted)
    assert done.json() == {"queued": 1}
    assert await ids_of(api, status="pending") == [mine]
    by_result = await api.post("/api/v1/deliveries/replay", json={"result_id": 999, "dry_run": True})
    assert by_result.json() == {"queued": 0, "matched": 0}


async def test_send_tests_and_removed_signals_are_never_requeued(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """Requeued, they would wait forever: the worker skips removed signals, tests are one-offs."""
    live = add_delivery(ctx.db, status="failed", workflow_id=21, signal_id=31)
    removed = add_delivery(ctx.db, status="failed", workflow_id=21, signal_id=32)
    cancelled = add_delivery(ctx.db, status="cancelled", workflow_id=21, signal_id=32)
    test_run = add_delivery(ctx.db, status="failed", workflow_id=21, signal_id=31)
    with ctx.db.transaction() as tx:
        tx.execute(update(signals).where(signals.c.id == 32).values(active=False))
        tx.execute(update(deliveries).where(deliveries.c.id == test_run).values(is_test=True))

    refused = await api.post(f"/api/v1/deliveries/{removed}/redeliver")
    assert refused.status_code == 409
    assert "signal was removed" in refused.json()["error"]
    refused = await api.post(f"/api/v1/deliveries/{test_run}/redeliver")
    assert refused.status_code == 409 and "send test" in refused.json()["error"]

    replayed = await api.post("/api/v1/deliveries/replay", json={"workflow_id": 21, "status": "failed"})
    assert replayed.json() == {"queued": 1}
    replayed = await api.post("/api/v1/deliveries/replay", json={"workflow_id": 21, "status": "cancelled"})
    assert replayed.json() == {"queued": 0}
    with ctx.db.reading() as tx:
        found = {i: hub_store.get_delivery(tx, i) for i in (live, removed, cancelled, test_run)}
    status = {i: row[0].status for i, row in found.items() if row}
    assert status == {live: "pending", removed: "failed", cancelled: "cancelled", test_run: "failed"}


async def test_replay_in_batches(ctx: AppContext) -> None:
    made = [add_delivery(ctx.db, status="failed", created_at=days_ago(1)) for _ in range(7)]
    progress: list[int] = []
    filters = hub.Filters(status="failed", since=days_ago(2))
    assert hub.count_replayable(ctx, filters) == 7
    assert hub.replay(ctx, filters, actor="cli", batch=3, on_progress=progress.append) == 7
    assert progress == [3, 3, 1]
    assert hub.count_replayable(ctx, filters) == 0
    with ctx.db.reading() as tx:
        statuses = {hub_store.get_delivery(tx, i)[0].status for i in made}  # type: ignore[index]
    assert statuses == {"pending"}


async def test_cancel(client: httpx.AsyncClient, ctx: AppContext, editor_key: str) -> None:
    for status in ("pending", "retrying", "held"):
        delivery_id = add_delivery(ctx.db, status=status)
        response = await client.post(f"/api/v1/deliveries/{delivery_id}/cancel", headers=auth(editor_key))
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        assert response.json()["next_attempt_at"] is None
    done = add_delivery(ctx.db, status="succeeded")
    response = await client.post(f"/api/v1/deliveries/{done}/cancel", headers=auth(editor_key))
    assert response.status_code == 409
    assert "is succeeded and cannot be cancelled" in response.json()["error"]
    assert (
        await client.post("/api/v1/deliveries/424242/cancel", headers=auth(editor_key))
    ).status_code == 404


async def test_set_restricted_user_sees_only_their_sets(
    client: httpx.AsyncClient, ctx: AppContext, make_key
) -> None:  # type: ignore[no-untyped-def]
    ensure_sets(ctx.db, 1, 2)
    key = make_key("editor", "sam", [1])
    mine = add_delivery(ctx.db, set_id=1, status="failed")
    other = add_delivery(ctx.db, set_id=2, status="failed")
    page = (await client.get("/api/v1/deliveries", headers=auth(key))).json()
    assert [i["id"] for i in page["items"]] == [mine]
    assert (await client.get(f"/api/v1/deliveries/{other}", headers=auth(key))).status_code == 404
    assert (await client.post(f"/api/v1/deliveries/{other}/redeliver", headers=auth(key))).status_code == 404
    replayed = await client.post("/api/v1/deliveries/replay", json={"status": "failed"}, headers=auth(key))
    assert replayed.json() == {"queued": 1}


async def test_endpoints_health_pause_and_resume(
    client: httpx.AsyncClient, ctx: AppContext, admin_key: str, editor_key: str
) -> None:
    now = utcnow()
    for i, ms in enumerate([100, 200, 300, 400]):
        delivery_id = add_delivery(ctx.db, status="succeeded")
        add_attempt(ctx.db, delivery_id, started_at=now - timedelta(minutes=10 + i), duration_ms=ms)
    failed = add_delivery(ctx.db, status="failed")
    add_attempt(ctx.db, failed, started_at=now - timedelta(hours=5), duration_ms=1000, status_code=503)
    add_delivery(ctx.db, status="pending")
    add_delivery(ctx.db, status="retrying")
    add_delivery(ctx.db, status="pending", endpoint=LIMS, url="https://lims.example.org:8443/x")
    set_endpoint_state(ctx.db, "https://slow.example.net:443", throttled_until=now + timedelta(minutes=5))
    set_endpoint_state(
        ctx.db,
        "https://down.example.net:443",
        circuit_state="open",
        circuit_opened_at=now - timedelta(minutes=3),
    )

    found = {e["origin"]: e for e in (await client.get("/api/v1/endpoints", headers=auth(editor_key))).json()}
    erp = found[ERP]
    assert erp["state"] == "ok" and erp["queue_depth"] == 2
    assert erp["last_hour"] == {"attempts": 4, "success_rate": 1.0, "p50_ms": 250.0, "p95_ms": 385.0}
    assert erp["last_day"]["attempts"] == 5 and erp["last_day"]["success_rate"] == pytest.approx(0.8)
    assert erp["last_day"]["p50_ms"] == 300.0
    assert found[LIMS]["queue_depth"] == 1 and found[LIMS]["last_day"]["success_rate"] is None
    assert found["https://slow.example.net:443"]["state"] == "throttled"
    assert found["https://slow.example.net:443"]["throttled_until"] is not None
    down = found["https://down.example.net:443"]
    assert down["state"] == "circuit_open" and down["circuit_open_since"] is not None

    path = f"/api/v1/endpoints/{quote(ERP, safe='')}/pause"
    assert (await client.post(path, headers=auth(editor_key))).status_code == 403
    response = await client.post(path, headers=auth(admin_key))
    assert response.status_code == 200 and response.json() == {
        "origin": ERP,
        "paused": True,
        "throttled_until": None,
    }
    found = {e["origin"]: e for e in (await client.get("/api/v1/endpoints", headers=auth(admin_key))).json()}
    assert found[ERP]["state"] == "paused" and found[ERP]["paused"] is True
    # Unencoded and without the default port works too.
    response = await client.post("/api/v1/endpoints/https://erp.example.com/resume", headers=auth(admin_key))
    assert response.json() == {"origin": ERP, "paused": False, "throttled_until": None}
    found = {e["origin"]: e for e in (await client.get("/api/v1/endpoints", headers=auth(admin_key))).json()}
    assert found[ERP]["state"] == "ok"
    # Resume takes one step: a pause ends first, the receiver's Retry-After wait next.
    slow = quote("https://slow.example.net:443", safe="")
    paused = (await client.post(f"/api/v1/endpoints/{slow}/pause", headers=auth(admin_key))).json()
    assert paused["paused"] is True and paused["throttled_until"] is not None
    resumed = (await client.post(f"/api/v1/endpoints/{slow}/resume", headers=auth(admin_key))).json()
    assert resumed["paused"] is False and resumed["throttled_until"] is not None
    resumed = (await client.post(f"/api/v1/endpoints/{slow}/resume", headers=auth(admin_key))).json()
    assert resumed == {"origin": "https://slow.example.net:443", "paused": False, "throttled_until": None}
    found = {e["origin"]: e for e in (await client.get("/api/v1/endpoints", headers=auth(admin_key))).json()}
    assert found["https://slow.example.net:443"]["state"] == "ok"
    with ctx.db.reading() as tx:
        changes = list(
            tx.execute(select(endpoint_log.c.change).where(endpoint_log.c.origin == ERP)).scalars()
        )
    assert changes == ["paused", "resumed"]
    bad = await client.post("/api/v1/endpoints/ftp:nothing/pause", headers=auth(admin_key))
    assert bad.status_code == 422


async def test_stats_per_hour(api: httpx.AsyncClient, ctx: AppContext) -> None:
    now = utcnow()
    hour = now.replace(minute=0, second=0, microsecond=0)
    earlier = hour - timedelta(hours=2)
    for ms in (10, 20, 30, 40, 50):
        delivery_id = add_delivery(ctx.db, status="succeeded", created_at=earlier + timedelta(minutes=5))
        add_attempt(ctx.db, delivery_id, started_at=earlier + timedelta(minutes=6), duration_ms=ms)
    failed = add_delivery(ctx.db, status="failed", created_at=earlier + timedelta(minutes=7))
    add_attempt(ctx.db, failed, started_at=earlier + timedelta(minutes=8), duration_ms=90, status_code=500)
    add_delivery(ctx.db, status="pending", created_at=days_ago(3))  # before the window

    response = await api.get("/api/v1/stats", params={"since": (now - timedelta(hours=3)).isoformat()})
    assert response.status_code == 200, response.text
    hours = {h["hour"]: h for h in response.json()["hours"]}
    assert len(hours) == 4
    bucket = next(h for key, h in hours.items() if key.startswith(earlier.strftime("%Y-%m-%dT%H")))
    assert bucket["deliveries"]["succeeded"] == 5 and bucket["deliveries"]["failed"] == 1
    assert bucket["deliveries"]["pending"] == 0
    assert bucket["attempts"] == 6 and bucket["attempts_succeeded"] == 5
    assert bucket["p50_ms"] == 35.0 and bucket["p95_ms"] == pytest.approx(80.0)
    others = [h for h in hours.values() if h is not bucket]
    assert all(h["attempts"] == 0 and sum(h["deliveries"].values()) == 0 for h in others)
    default = (await api.get("/api/v1/stats")).json()
    assert 24 <= len(default["hours"]) <= 25
    assert (await api.get("/api/v1/stats", params={"since": days_ago(60).isoformat()})).status_code == 422


def _count(ctx: AppContext, table, *where) -> int:  # type: ignore[no-untyped-def]
    with ctx.db.reading() as tx:
        return int(tx.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


async def test_purge_keeps_what_is_within_retention(
    ctx: AppContext, caplog: pytest.LogCaptureFixture
) -> None:
    old_ok = add_delivery(ctx.db, status="succeeded", created_at=days_ago(31))
    add_attempt(ctx.db, old_ok)
    add_attempt(ctx.db, old_ok, number=2)
    young_ok = add_delivery(ctx.db, status="succeeded", created_at=days_ago(29))
    add_attempt(ctx.db, young_ok)
    # Created long ago but redelivered yesterday: kept.
    redone = add_delivery(ctx.db, status="succeeded", created_at=days_ago(40), updated_at=days_ago(1))
    old_failed = add_delivery(ctx.db, status="failed", created_at=days_ago(91))
    add_attempt(ctx.db, old_failed, status_code=500)
    kept_failed = add_delivery(ctx.db, status="failed", created_at=days_ago(60))
    old_cancelled = add_delivery(ctx.db, status="cancelled", created_at=days_ago(35))
    old_pending = add_delivery(ctx.db, status="pending", created_at=days_ago(200))

    dry = hub.purge(ctx, dry_run=True)
    assert dry.dry_run and dry.deliveries == {"succeeded": 1, "cancelled": 1, "failed": 1}
    assert dry.attempts == 3 and dry.total == 3
    assert _count(ctx, deliveries) == 7

    with caplog.at_level("INFO", logger="qhook.hub"):
        done = hub.purge(ctx, batch=1)
    assert done.deliveries == dry.deliveries and done.attempts == 3
    # The log line said just "purged"; its counts were only in the structured fields.
    assert "purged 3 deliveries and 3 attempts past retention" in caplog.messages
    with ctx.db.reading() as tx:
        left = set(tx.execute(select(deliveries.c.id)).scalars())
    assert left == {young_ok, redone, kept_failed, old_pending}
    assert _count(ctx, attempts) == 1
    assert _count(ctx, attempts, attempts.c.delivery_id.in_([old_ok, old_failed, old_cancelled])) == 0
    assert hub.purge(ctx).total == 0


async def test_audit_records_every_hub_change(
    client: httpx.AsyncClient, ctx: AppContext, admin_key: str, editor_key: str
) -> None:
    failed = add_delivery(ctx.db, status="failed")
    pending = add_delivery(ctx.db, status="pending")
    add_delivery(ctx.db, status="failed", workflow_id=9)
    headers = auth(admin_key)
    await client.post(f"/api/v1/deliveries/{failed}/redeliver", headers=headers)
    await client.post(f"/api/v1/deliveries/{pending}/cancel", headers=headers)
    await client.post("/api/v1/deliveries/replay", json={"workflow_id": 9}, headers=headers)
    await client.post(f"/api/v1/endpoints/{quote(ERP, safe='')}/pause", headers=headers)
    await client.post(f"/api/v1/endpoints/{quote(ERP, safe='')}/resume", headers=headers)

    assert (await client.get("/api/v1/audit", headers=auth(editor_key))).status_code == 403
    page = (await client.get("/api/v1/audit", headers=headers)).json()
    hub_entries = [e for e in page["items"] if e["target_type"] in ("delivery", "endpoint")]
    assert [e["action"] for e in hub_entries] == [
        "endpoint.resume",
        "endpoint.pause",
        "delivery.replay",
        "delivery.cancel",
        "delivery.redeliver",
    ]
    assert all(e["actor"] == "alice" for e in hub_entries)
    assert hub_entries[0]["target_id"] == ERP
    assert hub_entries[2]["details"]["queued"] == 1
    assert hub_entries[2]["details"]["filters"] == {"workflow_id": 9}
    assert hub_entries[4]["target_id"] == str(failed)
    first = (await client.get("/api/v1/audit", headers=headers, params={"limit": "2"})).json()
    rest = (
        await client.get("/api/v1/audit", headers=headers, params={"cursor": first["next_cursor"]})
    ).json()
    assert [e["id"] for e in first["items"] + rest["items"]] == [e["id"] for e in page["items"]]


async def test_no_secret_appears_in_any_hub_answer(api: httpx.AsyncClient, ctx: AppContext) -> None:
    from sqlalchemy import insert

    from qhook.store import workflows
    from qhook.store.sets import insert_set
    from qhook.store.tables import auth_profiles

    signing = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="
    password = "pa55-w0rd-of-the-erp"
    token = "tok-9f8e7d6c5b4a"
    now = utcnow()
    with ctx.db.transaction() as tx:
        set_id = insert_set(tx, name="QC", kind="analysis_set", now=now)
        workflow_id = workflows.insert_workflow(
            tx,
            set_id=set_id,
            name="to ERP",
            active=True,
            triggers={"entry": True},
            filter=None,
            error_email=None,
            now=now,
        )
        profile_id = tx.execute(
            insert(auth_profiles)
            .values(
                name="ERP prod",
                type="basic",
                config={"username": "qhook", "allowed_domains": ["erp.example.com"]},
                secrets_enc=ctx.box.encrypt(json.dumps({"password": password, "token": token})),
                created_at=now,
                updated_at=now,
            )
            .returning(auth_profiles.c.id)
        ).scalar_one()
        signal_id = workflows.insert_signal(
            tx,
            workflow_id=workflow_id,
            position=0,
            type="webhook",
            config={"url": "https://erp.example.com/hooks/qc", "auth_profile_id": profile_id},
            secret_enc=ctx.box.encrypt(signing),
        )
    delivery_id = add_delivery(
        ctx.db, status="failed", workflow_id=workflow_id, signal_id=signal_id, set_id=set_id
    )
    # Even if a worker stored a credential header unredacted, the Hub does not show it.
    add_attempt(
        ctx.db,
        delivery_id,
        status_code=401,
        request_headers={"Authorization": f"Bearer {token}", "X-Api-Key": password, "webhook-id": "msg_1"},
    )
    await api.post(f"/api/v1/endpoints/{quote(ERP, safe='')}/pause", headers={})
    answers = [
        await api.get("/api/v1/deliveries"),
        await api.get("/api/v1/deliveries", params={"q": "erp"}),
        await api.get(f"/api/v1/deliveries/{delivery_id}"),
        await api.post(f"/api/v1/deliveries/{delivery_id}/redeliver"),
        await api.post("/api/v1/deliveries/replay", json={"status": "failed"}),
        await api.get("/api/v1/endpoints"),
        await api.get("/api/v1/stats"),
        await api.get("/api/v1/audit"),
    ]
    for response in answers:
        assert response.status_code == 200, (response.request.url, response.text)
        text = response.text
        for secret in (signing, password, token, "c2VjcmV0LXNpZ25pbmcta2V5"):
            assert secret not in text, (response.request.url, secret)
    detail = answers[2].json()
    assert detail["attempts"][0]["request_headers"]["Authorization"] == "[redacted]"
    assert detail["attempts"][0]["request_headers"]["webhook-id"] == "msg_1"


async def test_retention_loop_purges_and_stops(ctx: AppContext) -> None:
    import asyncio

    old = add_delivery(ctx.db, status="succeeded", created_at=days_ago(31))
    kept = add_delivery(ctx.db, status="succeeded", created_at=days_ago(1))
    stop = asyncio.Event()
    task = asyncio.create_task(hub.run_retention(ctx, stop))
    for _ in range(100):
        with ctx.db.reading() as tx:
            if hub_store.get_delivery(tx, old) is None:
                break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    with ctx.db.reading() as tx:
        assert hub_store.get_delivery(tx, old) is None
        assert hub_store.get_delivery(tx, kept) is not None


async def test_the_detail_says_why_a_delivery_waits(api: httpx.AsyncClient, ctx: AppContext) -> None:
    """A pending or held delivery showed nothing (or the old failure's hint) about what holds it."""
    now = utcnow()
    pending = add_delivery(ctx.db, status="pending")
    held = add_delivery(ctx.db, status="held", endpoint=LIMS, url="https://lims.example.org:8443/x")
    done = add_delivery(ctx.db, status="succeeded")

    async def waiting(delivery_id: int) -> object:
        response = await api.get(f"/api/v1/deliveries/{delivery_id}")
        assert response.status_code == 200, response.text
        return response.json()["waiting"]

    assert await waiting(pending) == "Due now: it goes when a worker has room within the endpoint's limits."
    assert await waiting(done) is None
    set_endpoint_state(ctx.db, ERP, throttled_until=now + timedelta(minutes=5))
    assert str(await waiting(pending)).startswith(f"Waiting: {ERP} asked qhook to wait until ")
    assert (await api.post(f"/api/v1/endpoints/{quote(ERP, safe='')}/pause")).status_code == 200
    assert str(await waiting(pending)).startswith(f"Waiting: an operator paused {ERP}.")
    with ctx.db.transaction() as tx:
        tx.execute(
            update(signals).where(signals.c.id == 1).values(paused_reason="the receiver answered 410 Gone")
        )
    assert await waiting(pending) == (
        "Waiting: its signal is paused (the receiver answered 410 Gone). Resume the signal to send it."
    )
    with ctx.db.transaction() as tx:
        tx.execute(update(signals).where(signals.c.id == 1).values(paused_reason=None))
    set_endpoint_state(ctx.db, "https://lims.example.org:8443", circuit_state="open", circuit_opened_at=now)
    assert str(await waiting(held)).startswith("Held: the circuit of https://lims.example.org:8443 is open")


async def test_an_ordered_delivery_says_which_earlier_one_it_waits_for(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """The Hub said "Due now" for an ordered delivery held back behind its result's earlier one."""
    from sqlalchemy import update

    from qhook.store.tables import deliveries
    from tests.support.delivery import enqueue, make_signal

    signal_id = make_signal(ctx, "https://erp.example.com/hook")
    first, second, third = enqueue(
        ctx, signal_id, "https://erp.example.com/hook", ["1", "2", "3"], ordered=True
    )
    [other_result] = enqueue(ctx, signal_id, "https://erp.example.com/hook", ["x"], result_id=2, ordered=True)
    [unordered] = enqueue(ctx, signal_id, "https://erp.example.com/hook", ["u"])
    with ctx.db.transaction() as tx:
        tx.execute(update(deliveries).where(deliveries.c.id == first).values(status="retrying"))

    async def waiting(delivery_id: int) -> object:
        return (await api.get(f"/api/v1/deliveries/{delivery_id}")).json()["waiting"]

    for later in (second, third):
        assert await waiting(later) == (
            f"Waiting: the signal keeps each result's deliveries in order, and delivery {first} of the same "
            "result is still retrying. This one goes once that one succeeded, failed or was cancelled."
        )
    due = "Due now: it goes when a worker has room within the endpoint's limits."
    assert await waiting(other_result) == due and await waiting(unordered) == due
    with ctx.db.transaction() as tx:
        tx.execute(
            update(deliveries).where(deliveries.c.id == first).values(status="failed", next_attempt_at=None)
        )
    assert await waiting(second) == due
    assert str(await waiting(third)).startswith(
        f"Waiting: the signal keeps each result's deliveries in order, and delivery {second} "
    )


async def test_the_webhook_id_a_receiver_logged_finds_its_delivery(
    api: httpx.AsyncClient, ctx: AppContext, make_key
) -> None:  # type: ignore[no-untyped-def]
    """A receiver logs the webhook-id header; searching the Hub for it found nothing (the search
    reads bodies) and nothing else took it (a receiver developer's review)."""
    ensure_sets(ctx.db, 1, 2)
    wanted = add_delivery(ctx.db, status="failed")
    add_delivery(ctx.db, status="failed")
    other_set = add_delivery(ctx.db, status="failed", set_id=2, workflow_id=2, signal_id=2)
    with ctx.db.reading() as tx:
        known = dict(tx.execute(select(deliveries.c.id, deliveries.c.webhook_id)).all())

    async def found(key: str | None = None, **params: str) -> list[int]:
        headers = auth(key) if key else {}
        answer = await api.get("/api/v1/deliveries", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        return [d["id"] for d in answer.json()["items"]]

    assert await found(q=f" {known[wanted]} ") == [wanted]
    assert await found(q=known[wanted], status="failed") == [wanted]
    assert await found(q=known[wanted], status="succeeded") == []  # the other filters still apply
    assert await found(q="msg_01NOSUCHDELIVERY000000000") == []
    limited = make_key("viewer", "val", [1])
    assert await found(limited, q=known[other_set]) == []  # outside the asker's sets
    assert await found(limited, q=known[wanted]) == [wanted]
