"""POST /api/v1/workflows/{id}/run on both databases: manual events, deliveries, why not."""

from __future__ import annotations

import json

import httpx

from qhook.context import AppContext
from tests.conftest import auth
from tests.support.workflows import add_result, deliveries_of, events_of, make_set, make_workflow


async def test_manual_run_fires_per_result_or_says_why(
    api: httpx.AsyncClient, ctx: AppContext, editor_key: str
) -> None:
    set_id = await make_set(api)
    workflow = await make_workflow(
        api,
        set_id,
        triggers={"manual": True},
        filter={"field": "status_", "op": "eq", "value": "released"},
    )
    released = await add_result(api, set_id, batchnumber_="B-1", status_="released")
    draft = await add_result(api, set_id, batchnumber_="B-2", status_="draft")
    assert deliveries_of(ctx, released) == []  # manual only: saving fires nothing
    response = await api.post(
        f"/api/v1/workflows/{workflow['id']}/run",
        json={"result_ids": [released, draft, 99999]},
        headers=auth(editor_key),
    )
    assert response.status_code == 200, response.text
    outcomes = {o["result_id"]: o for o in response.json()["results"]}
    assert outcomes[released]["fired"] is True
    assert outcomes[draft] == {
        "result_id": draft,
        "fired": False,
        "reason": "filter not met: status_ is 'draft', expected eq 'released'",
        "event_id": outcomes[draft]["event_id"],
    }
    assert outcomes[99999]["fired"] is False and "no such result" in outcomes[99999]["reason"]
    [delivery] = deliveries_of(ctx, released)
    assert delivery.action == "manual" and json.loads(delivery.body)["action"] == "manual"
    assert json.loads(delivery.body)["message"] == ""
    manual_event = (await events_of(api, released))[-1]
    assert manual_event["action"] == "manual" and manual_event["actor"] == "erin"
    assert manual_event["uid"] == outcomes[released]["event_id"]
    assert deliveries_of(ctx, draft) == []
    # Running again is the re-run after a failure: a new event and a new delivery.
    await api.post(f"/api/v1/workflows/{workflow['id']}/run", json={"result_ids": [released]})
    assert len(deliveries_of(ctx, released)) == 2


async def test_only_with_manual_trigger_and_not_for_viewers(
    api: httpx.AsyncClient, ctx: AppContext, viewer_key: str
) -> None:
    set_id = await make_set(api)
    workflow = await make_workflow(api, set_id, triggers={"entry": True})
    result_id = await add_result(api, set_id, batchnumber_="B-1")
    response = await api.post(f"/api/v1/workflows/{workflow['id']}/run", json={"result_ids": [result_id]})
    assert response.status_code == 409
    assert "manual" in response.json()["error"]
    manual = await make_workflow(api, set_id, name="Manual", triggers={"manual": True})
    response = await api.post(
        f"/api/v1/workflows/{manual['id']}/run", json={"result_ids": [result_id]}, headers=auth(viewer_key)
    )
    assert response.status_code == 403
    response = await api.post(f"/api/v1/workflows/{manual['id']}/run", json={"result_ids": []})
    assert response.status_code == 422
    # The manual run fires only that workflow, not the set's other workflows.
    before = len(deliveries_of(ctx, result_id))
    response = await api.post(f"/api/v1/workflows/{manual['id']}/run", json={"result_ids": [result_id]})
    assert response.json()["results"][0]["fired"] is True
    found = deliveries_of(ctx, result_id)
    assert len(found) == before + 1 and found[-1].workflow_id == manual["id"]
    assert len((await events_of(api, result_id))[-1]["evaluations"]) == 1


async def test_a_run_during_a_change_sends_the_result_as_changed_after_the_change(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """A run read the result without waiting for a change being written: it queued the older
    values after the change's own delivery, and an ordered signal's receiver kept the older state.
    Now the run waits for the change and sends the result as changed, after it."""
    import threading

    from qhook.services import results as result_service
    from qhook.services import workflows as workflow_service

    set_id = await make_set(api)
    workflow = await make_workflow(
        api,
        set_id,
        triggers={"manual": True, "modification": True},
        signals=[{"type": "webhook", "url": "http://127.0.0.1:9/hook", "ordered": True}],
    )
    result_id = await add_result(api, set_id, batchnumber_="B-1", note_="old")
    run_done = threading.Event()

    def run() -> None:
        workflow_service.run_manual(ctx, workflow["id"], [result_id], actor="tests")
        run_done.set()

    with result_service.writing(ctx) as tx:
        result_service.update_result_tx(
            tx, ctx, set_id=set_id, result_id=result_id, values={"note_": "new"}, actor="tests"
        )
        runner = threading.Thread(target=run)
        runner.start()
        assert not run_done.wait(0.5)  # the run waits for the change being written
    runner.join(10)
    assert run_done.is_set()
    sent = [(d.action, json.loads(d.body)["results"]["note_"]) for d in deliveries_of(ctx, result_id)]
    assert sent == [("modified", "new"), ("manual", "new")]
