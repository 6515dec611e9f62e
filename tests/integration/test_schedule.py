"""on_date workflows on both databases: schedule rows at write time, firing once, moving, dropping."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from qhook import scheduler
from qhook.context import AppContext, open_context
from qhook.services import workflows as workflows_service
from qhook.settings import Settings
from tests.support.workflows import (
    add_result,
    deliveries_of,
    events_of,
    make_set,
    make_workflow,
    patch_result,
    schedules_of,
)

ON_DATE = {"on_date": {"field": "expiry_", "offset": "-P7D", "at": "08:00"}}


async def test_date_field_schedule_fires_once(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = await make_set(api)
    workflow = await make_workflow(api, set_id, triggers=ON_DATE)
    result_id = await add_result(api, set_id, batchnumber_="B-1", expiry_="2031-03-10")
    [schedule] = schedules_of(ctx, workflow["id"])
    assert schedule.result_id == result_id
    assert schedule.due_at == datetime(2031, 3, 3, 8, 0, tzinfo=UTC)
    assert schedule.fired_at is None
    assert deliveries_of(ctx, result_id) == []  # saving it does not fire it
    assert scheduler.tick(ctx, schedule.due_at - timedelta(seconds=1)) == 0
    assert scheduler.tick(ctx, schedule.due_at) == 1
    assert scheduler.tick(ctx, schedule.due_at + timedelta(days=1)) == 0
    [delivery] = deliveries_of(ctx, result_id)
    body = json.loads(delivery.body)
    assert delivery.action == "date" and body["action"] == "date"
    assert body["due_at"] == "2031-03-03T08:00:00Z" and body["result_version"] == 1
    date_event = (await events_of(api, result_id))[-1]
    assert date_event["action"] == "date"
    assert date_event["due_at"] == "2031-03-03T08:00:00Z" and date_event["result_version"] == 1
    entered = (await events_of(api, result_id))[0]
    assert entered["action"] == "new" and entered["due_at"] is None
    assert date_event["evaluations"][0]["fired"] is True
    assert schedules_of(ctx, workflow["id"])[0].fired_at is not None


async def test_datetime_field_is_exact(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = await make_set(api)
    workflow = await make_workflow(
        api, set_id, triggers={"on_date": {"field": "tested_", "offset": "PT1H30M"}}
    )
    await add_result(api, set_id, batchnumber_="B-1", tested_="2031-01-01T10:00:00Z")
    [schedule] = schedules_of(ctx, workflow["id"])
    assert schedule.due_at == datetime(2031, 1, 1, 11, 30, tzinfo=UTC)


async def test_past_due_fires_after_a_restart_once(
    api: httpx.AsyncClient, ctx: AppContext, settings: Settings
) -> None:
    set_id = await make_set(api)
    workflow = await make_workflow(api, set_id, triggers=ON_DATE)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    result_id = await add_result(api, set_id, batchnumber_="B-1", expiry_=yesterday)
    [schedule] = schedules_of(ctx, workflow["id"])
    assert schedule.due_at < datetime.now(UTC)  # already due when saved
    # The process "stops" before its scheduler ticks; a new one starts on the same database.
    restarted = open_context(settings)
    try:
        assert scheduler.tick(restarted) == 1
        assert scheduler.tick(restarted) == 0
    finally:
        restarted.db.dispose()
    assert scheduler.tick(ctx) == 0
    [delivery] = deliveries_of(ctx, result_id)
    # Fired a day late: occurred_at says when, due_at which due time it was.
    body = json.loads(delivery.body)
    assert body["due_at"] == schedule.due_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["occurred_at"] > body["due_at"]


async def test_schedule_moves_when_the_field_changes(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = await make_set(api)
    workflow = await make_workflow(api, set_id, triggers=ON_DATE)
    result_id = await add_result(api, set_id, batchnumber_="B-1", expiry_="2031-03-10")
    first = schedules_of(ctx, workflow["id"])[0]
    scheduler.tick(ctx, first.due_at)
    assert schedules_of(ctx, workflow["id"])[0].fired_at is not None
    await patch_result(api, set_id, result_id, expiry_="2031-06-10")
    [moved] = schedules_of(ctx, workflow["id"])
    assert moved.due_at == datetime(2031, 6, 3, 8, 0, tzinfo=UTC)
    assert moved.fired_at is None  # a new due time fires again
    await patch_result(api, set_id, result_id, note_="unrelated")
    assert schedules_of(ctx, workflow["id"])[0].due_at == moved.due_at
    await patch_result(api, set_id, result_id, expiry_=None)
    assert schedules_of(ctx, workflow["id"]) == []


async def test_dropped_on_delete_and_on_deactivate(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = await make_set(api)
    workflow = await make_workflow(api, set_id, triggers=ON_DATE)
    gone = await add_result(api, set_id, batchnumber_="B-1", expiry_="2031-03-10")
    await add_result(api, set_id, batchnumber_="B-2", expiry_="2031-04-10")
    assert len(schedules_of(ctx, workflow["id"])) == 2
    assert (await api.delete(f"/api/v1/sets/{set_id}/results/{gone}")).status_code == 204
    assert [s.result_id for s in schedules_of(ctx, workflow["id"])] != [gone]
    assert len(schedules_of(ctx, workflow["id"])) == 1
    response = await api.patch(f"/api/v1/workflows/{workflow['id']}", json={"active": False})
    assert response.status_code == 200, response.text
    assert schedules_of(ctx, workflow["id"]) == []
    assert scheduler.tick(ctx, datetime(2040, 1, 1, tzinfo=UTC)) == 0
    # Reactivated: future due times are scheduled again from the stored results.
    await api.patch(f"/api/v1/workflows/{workflow['id']}", json={"active": True})
    assert len(schedules_of(ctx, workflow["id"])) == 1


async def test_new_workflow_schedules_existing_results_in_the_future_only(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    set_id = await make_set(api)
    future = await add_result(api, set_id, batchnumber_="B-1", expiry_="2031-03-10")
    await add_result(api, set_id, batchnumber_="B-0", expiry_="2001-03-10")
    workflow = await make_workflow(api, set_id, triggers=ON_DATE)
    assert [s.result_id for s in schedules_of(ctx, workflow["id"])] == [future]


async def test_an_edit_of_another_field_does_not_replay_a_past_due_time(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """A new workflow does not replay the past, nor does switching one off and on send a due time a
    second time; an unrelated edit made a fresh, unfired row for the past due time, sent at the
    next tick. Entering a result, or changing its date, still fires a past due time once."""
    set_id = await make_set(api)
    before = await add_result(api, set_id, batchnumber_="B-0", expiry_="2001-03-10")
    workflow = await make_workflow(api, set_id, triggers=ON_DATE)
    await patch_result(api, set_id, before, note_="unrelated edit")
    # The same through storeResults (the batch path), by key field.
    stored = await api.post(
        "/api/storeResults",
        data={
            "setId": str(set_id),
            "keyField": "batchnumber_",
            "results": json.dumps([{"batchnumber_": "B-0", "note_": "edited in bulk"}]),
        },
    )
    assert stored.status_code == 200, stored.text
    assert stored.json()["updated"] == 1
    assert schedules_of(ctx, workflow["id"]) == []
    assert scheduler.tick(ctx) == 0
    # Entered with a past due time: fires once.
    entered = await add_result(api, set_id, batchnumber_="B-1", expiry_="2001-04-10")
    assert scheduler.tick(ctx) == 1
    assert len(deliveries_of(ctx, entered)) == 1
    # Off and on again, then an unrelated edit: the due time that fired is not sent again.
    for active in (False, True):
        switched = await api.patch(f"/api/v1/workflows/{workflow['id']}", json={"active": active})
        assert switched.status_code == 200, switched.text
    await patch_result(api, set_id, entered, note_="unrelated edit")
    assert scheduler.tick(ctx) == 0
    assert len(deliveries_of(ctx, entered)) == 1
    # Its date changed to another past day: that due time fires, once.
    await patch_result(api, set_id, before, expiry_="2001-05-10")
    assert scheduler.tick(ctx) == 1
    assert scheduler.tick(ctx) == 0
    assert len(deliveries_of(ctx, before)) == 1


async def test_run_scheduler_loop_fires_and_stops(api: httpx.AsyncClient, ctx: AppContext) -> None:
    import asyncio

    set_id = await make_set(api)
    await make_workflow(api, set_id, triggers=ON_DATE)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    result_id = await add_result(api, set_id, batchnumber_="B-1", expiry_=yesterday)
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run_scheduler(ctx, stop))
    for _ in range(100):
        if deliveries_of(ctx, result_id):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(deliveries_of(ctx, result_id)) == 1


async def test_one_scheduler_at_a_time(api: httpx.AsyncClient, ctx: AppContext) -> None:
    from qhook.store import workflows as workflow_store

    set_id = await make_set(api)
    await make_workflow(api, set_id, triggers=ON_DATE)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    await add_result(api, set_id, batchnumber_="B-1", expiry_=yesterday)
    if ctx.db.is_sqlite:  # one process per SQLite database; the lock is PostgreSQL's
        assert scheduler.tick(ctx) == 1
        return
    with ctx.db.transaction() as tx:
        assert workflow_store.try_scheduler_lock(tx)
        assert scheduler.tick(ctx) == 0  # another "process" holds the lock
    assert scheduler.tick(ctx) == 1


async def test_dates_at_the_calendar_edges_are_stored_and_scheduled_within_it(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """A due moment before the year 1 or after 9999 raised OverflowError: the result (or the new
    workflow, over the set's existing results) was a 500. Such a result is stored, unscheduled;
    its date-times read back in four-digit ISO years."""
    set_id = await make_set(api)
    early = await add_result(
        api, set_id, batchnumber_="B-0", expiry_="0001-01-01", tested_="0001-01-01 00:30:00"
    )
    before = await make_workflow(api, set_id, triggers=ON_DATE)  # -P7D from the year 1
    after = await make_workflow(
        api, set_id, name="late", triggers={"on_date": {"field": "expiry_", "offset": "P1D"}}
    )
    late = await add_result(api, set_id, batchnumber_="B-9", expiry_="9999-12-31")
    # Only what the calendar holds: seven days before the last day of 9999, nothing for the year 1.
    [scheduled] = schedules_of(ctx, before["id"])
    assert (scheduled.result_id, scheduled.due_at) == (late, datetime(9999, 12, 24, 8, 0, tzinfo=UTC))
    assert schedules_of(ctx, after["id"]) == []
    stored = (await api.get(f"/api/v1/sets/{set_id}/results/{early}")).json()["values"]
    assert stored["tested_"] == "0001-01-01T00:30:00Z" and stored["expiry_"] == "0001-01-01"
    assert (await api.get(f"/api/v1/sets/{set_id}/results/{late}")).status_code == 200


async def test_a_new_offset_does_not_send_again_what_was_sent(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """Moving a workflow's offset (or a result's date) to a time already past re-fired every row
    that had fired: a new ``at`` sent every past reminder of the set again. A due time moved into
    the past after firing stays fired; one moved into the future fires again then."""
    set_id = await make_set(api)
    workflow = await make_workflow(api, set_id, triggers=ON_DATE)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    result_id = await add_result(api, set_id, batchnumber_="B-1", expiry_=yesterday)
    assert scheduler.tick(ctx) == 1
    fired = schedules_of(ctx, workflow["id"])[0]

    earlier = {"on_date": {"field": "expiry_", "offset": "-P8D", "at": "09:00"}}
    response = await api.patch(f"/api/v1/workflows/{workflow['id']}", json={"triggers": earlier})
    assert response.status_code == 200, response.text
    [moved] = schedules_of(ctx, workflow["id"])
    assert moved.due_at == fired.due_at - timedelta(days=1) + timedelta(hours=1)
    assert moved.fired_at == fired.fired_at
    assert scheduler.tick(ctx) == 0

    two_days_ago = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    await patch_result(api, set_id, result_id, expiry_=two_days_ago)  # an earlier date, also past
    assert schedules_of(ctx, workflow["id"])[0].fired_at == fired.fired_at
    assert scheduler.tick(ctx) == 0
    assert len(deliveries_of(ctx, result_id)) == 1

    later = {"on_date": {"field": "expiry_", "offset": "P30D", "at": "09:00"}}
    response = await api.patch(f"/api/v1/workflows/{workflow['id']}", json={"triggers": later})
    assert response.status_code == 200, response.text
    [future] = schedules_of(ctx, workflow["id"])
    assert future.due_at > datetime.now(UTC) and future.fired_at is None
    assert scheduler.tick(ctx, future.due_at) == 1
    assert len(deliveries_of(ctx, result_id)) == 2


async def test_preview_of_a_date_trigger_says_when_and_whether_it_fires(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """Preview said "would fire" for a result whose date field is empty: it never fires."""
    set_id = await make_set(api)
    old = await add_result(api, set_id, batchnumber_="B-0", expiry_="2001-03-10")
    workflow = await make_workflow(api, set_id, triggers=ON_DATE)
    empty = await add_result(api, set_id, batchnumber_="B-1")
    coming = await add_result(api, set_id, batchnumber_="B-2", expiry_="2031-03-10")

    async def preview(result_id: int) -> dict[str, object]:
        url = f"/api/v1/workflows/{workflow['id']}/preview"
        response = await api.post(url, json={"result_id": result_id, "action": "date"})
        assert response.status_code == 200, response.text
        found: dict[str, object] = response.json()
        return found

    never = await preview(empty)
    assert never["would_fire"] is False
    assert never["reason"] == "never fires for this result: expiry_ is empty"
    assert never["bodies"] == []

    past = await preview(old)
    assert past["would_fire"] is False and past["due_at"] == "2001-03-03T08:00:00Z"
    assert "had passed when the workflow was saved" in str(past["reason"])

    due = await preview(coming)
    assert due["would_fire"] is True and due["bodies"]
    assert (due["due_at"], due["fired_at"]) == ("2031-03-03T08:00:00Z", None)
    bodies = due["bodies"]
    assert isinstance(bodies, list)
    assert [json.loads(b["body"])["due_at"] for b in bodies] == ["2031-03-03T08:00:00Z"]  # as it would fire
    scheduler.tick(ctx, datetime(2031, 3, 3, 8, 0, tzinfo=UTC))
    assert (await preview(coming))["fired_at"] is not None


async def test_a_fired_row_stays_fired_when_an_edit_of_another_field_moves_it(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """After QHOOK_TIMEZONE changed, an edit of another field computed the due time in the new
    zone, later than the old one, and the fired row became due again: sent twice. A change of the
    date itself still moves it and fires again."""
    from qhook.store import workflows as workflow_store

    set_id = await make_set(api)
    workflow = await make_workflow(api, set_id, triggers=ON_DATE)
    result_id = await add_result(api, set_id, batchnumber_="B-1", expiry_="2031-03-10")
    [row] = schedules_of(ctx, workflow["id"])
    assert scheduler.tick(ctx, row.due_at) == 1
    later = row.due_at + timedelta(hours=5)  # the same date's 08:00 in America/New_York
    with ctx.db.transaction() as tx:
        workflow_store.put_schedule(
            tx, workflow["id"], result_id, later, row.due_at, "America/New_York", fire_past=False
        )
    [kept] = schedules_of(ctx, workflow["id"])
    assert kept.fired_at is not None and kept.due_at == later
    assert scheduler.tick(ctx, later) == 0
    with ctx.db.transaction() as tx:
        workflow_store.put_schedule(tx, workflow["id"], result_id, later + timedelta(days=1), later, "UTC")
    assert schedules_of(ctx, workflow["id"])[0].fired_at is None  # its date changed: due again


async def test_a_reschedule_over_many_pages_writes_each_row_as_one_at_a_time_did(
    api: httpx.AsyncClient, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A workflow's schedules are written a page of results at a time (one statement per result
    took 12 s for 20,000 on SQLite). Across pages: a fired row moved into the past stays fired,
    waiting rows move, a past due time without a row gets none, a result without the new field's
    value loses its row, and one that gains a due time gets a row."""
    monkeypatch.setattr(workflows_service, "RESULTS_PER_PAGE", 2)
    set_id = await make_set(api)
    await add_result(api, set_id, batchnumber_="B-8", expiry_="2001-03-10")  # past: never scheduled
    workflow = await make_workflow(api, set_id, triggers=ON_DATE)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    fired_id = await add_result(
        api, set_id, batchnumber_="B-0", expiry_=yesterday.date().isoformat(), tested_="2031-05-01T10:00:00Z"
    )
    assert scheduler.tick(ctx) == 1
    [fired] = schedules_of(ctx, workflow["id"])
    futures = {
        await add_result(
            api,
            set_id,
            batchnumber_=f"B-{n}",
            expiry_=f"2031-03-{n:02d}",
            tested_=f"2031-04-{n:02d}T10:00:00Z",
        ): n
        for n in range(1, 6)
    }
    untested = await add_result(api, set_id, batchnumber_="B-7", expiry_="2031-03-07")
    assert len(schedules_of(ctx, workflow["id"])) == 7

    earlier = {"on_date": {"field": "expiry_", "offset": "-P8D", "at": "09:00"}}
    response = await api.patch(f"/api/v1/workflows/{workflow['id']}", json={"triggers": earlier})
    assert response.status_code == 200, response.text
    rows = {s.result_id: s for s in schedules_of(ctx, workflow["id"])}
    assert sorted(rows) == sorted([fired_id, untested, *futures])
    assert rows[fired_id].fired_at == fired.fired_at  # moved into the past after firing: stays fired
    assert rows[fired_id].due_at == fired.due_at - timedelta(days=1) + timedelta(hours=1)
    for result_id, n in futures.items():
        assert rows[result_id].due_at == datetime(2031, 3, n, 9, 0, tzinfo=UTC) - timedelta(days=8)
        assert rows[result_id].fired_at is None

    on_test = {"on_date": {"field": "tested_", "offset": "PT2H"}}
    response = await api.patch(f"/api/v1/workflows/{workflow['id']}", json={"triggers": on_test})
    assert response.status_code == 200, response.text
    rows = {s.result_id: s for s in schedules_of(ctx, workflow["id"])}
    assert sorted(rows) == sorted([fired_id, *futures])  # B-7 has no test time: its row is gone
    assert rows[fired_id].due_at == datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
    assert rows[fired_id].fired_at is None  # moved into the future: it fires again then
    for result_id, n in futures.items():
        assert rows[result_id].due_at == datetime(2031, 4, n, 12, 0, tzinfo=UTC)
    assert scheduler.tick(ctx) == 0
    assert len(deliveries_of(ctx, fired_id)) == 1
