"""One event id people can use everywhere, on SQLite and PostgreSQL: the "evt_..." uid receivers
get is on Hub items and details, filters the Hub, and finds the event in GET /api/v1/events."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import select, update

from qhook.context import AppContext
from qhook.errors import ValidationFailed
from qhook.services import hub
from qhook.store.tables import deliveries
from tests.conftest import auth
from tests.support.workflows import add_result, make_set, make_workflow


async def hub_items(api: httpx.AsyncClient, **params: object) -> list[dict[str, object]]:
    answer = await api.get("/api/v1/deliveries", params=params)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, object]] = answer.json()["items"]
    return items


async def test_hub_shows_and_filters_by_the_receivers_event_id(api: httpx.AsyncClient) -> None:
    set_id = await make_set(api)
    await make_workflow(api, set_id)
    await make_workflow(api, set_id, name="Second copy")  # two deliveries for one event
    first = await add_result(api, set_id, batchnumber_="B-1")
    await add_result(api, set_id, batchnumber_="B-2")

    items = await hub_items(api)
    assert len(items) == 4
    mine = [i for i in items if i["result_id"] == first]
    assert len(mine) == 2
    uid = mine[0]["event_uid"]
    assert isinstance(uid, str) and uid.startswith("evt_")
    assert mine[1]["event_uid"] == uid and isinstance(mine[0]["event_id"], int)

    detail = (await api.get(f"/api/v1/deliveries/{mine[0]['id']}")).json()
    assert detail["event_uid"] == uid
    assert json.loads(detail["request"]["body"])["event_id"] == uid  # what the receiver got

    wanted = sorted(int(str(i["id"])) for i in mine)
    for params in ({"event_id": uid}, {"event_uid": uid}, {"event_id": str(mine[0]["event_id"])}):
        found = await hub_items(api, **params)
        assert sorted(int(str(i["id"])) for i in found) == wanted, params
    assert await hub_items(api, event_id=uid, status="failed") == []
    assert await hub_items(api, event_id="evt_01ZZZZZZZZZZZZZZZZZZZZZZZZ") == []
    bad = await api.get("/api/v1/deliveries", params={"event_id": "batch B-1"})
    assert bad.status_code == 422 and "event_id" in bad.text


async def test_events_by_uid(api: httpx.AsyncClient, make_key) -> None:  # type: ignore[no-untyped-def]
    set_id = await make_set(api)
    other_set = await make_set(api, name="Other")
    result_id = await add_result(api, set_id, batchnumber_="B-1")
    await api.patch(f"/api/v1/sets/{set_id}/results/{result_id}", json={"values": {"ph_": 7}})
    trail = (await api.get("/api/v1/events", params={"result_id": result_id})).json()["items"]
    assert len(trail) == 2
    newest = trail[0]

    found = await api.get("/api/v1/events", params={"uid": newest["uid"]})
    assert found.status_code == 200
    assert [e["id"] for e in found.json()["items"]] == [newest["id"]]
    assert (await api.get("/api/v1/events", params={"uid": "evt_nothing"})).json()["items"] == []

    outsider = make_key("viewer", "olaf", set_ids=[other_set])
    hidden = await api.get("/api/v1/events", params={"uid": newest["uid"]}, headers=auth(outsider))
    assert hidden.status_code == 200 and hidden.json()["items"] == []


async def test_replay_by_event_replays_that_events_deliveries_only(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """`qhook replay --event X` dropped the event filter and replayed every delivery, whatever X
    was; a blank text search got past the "at least one filter" guard the same way."""
    set_id = await make_set(api)
    await make_workflow(api, set_id)
    await make_workflow(api, set_id, name="Second copy")
    first = await add_result(api, set_id, batchnumber_="B-1")
    await add_result(api, set_id, batchnumber_="B-2")
    items = await hub_items(api)
    with ctx.db.transaction() as tx:
        tx.execute(update(deliveries).values(status="failed", next_attempt_at=None))
    uid = str(next(i["event_uid"] for i in items if i["result_id"] == first))
    mine = sorted(int(str(i["id"])) for i in items if i["result_id"] == first)

    assert hub.count_replayable(ctx, hub.Filters(event=uid)) == 2
    assert hub.replay(ctx, hub.Filters(event=uid), actor="t") == 2
    with ctx.db.reading() as tx:
        pending = sorted(
            r.id for r in tx.execute(select(deliveries.c.id).where(deliveries.c.status == "pending"))
        )
    assert pending == mine
    for bad in (hub.Filters(event="evt_01NOPE0000000000000000000000"), hub.Filters(event="99999999")):
        with pytest.raises(ValidationFailed) as refused:
            hub.count_replayable(ctx, bad)
        assert refused.value.details[0]["field"] == "event"
    for blank in ("", "   "):
        with pytest.raises(ValidationFailed, match="at least one filter"):
            hub.replay(ctx, hub.Filters(q=blank), actor="t")
    replayed = await api.post("/api/v1/deliveries/replay", json={"q": " ", "dry_run": True})
    assert replayed.status_code == 422, replayed.text
