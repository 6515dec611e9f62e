"""storeResults in one batch (no chained signals) answers and writes exactly as one result at a time."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import select

from qhook.context import AppContext
from qhook.services import fanout
from qhook.store.tables import deliveries, events, results
from tests.support.workflows import RECEIVER, make_set, make_workflow

FIELDS = [
    {"name": "batchnumber_", "type": "text", "required": True},
    {"name": "status_", "type": "list", "options": ["draft", "released"]},
    {"name": "ph_", "type": "number"},
    {"name": "count_", "type": "integer"},
    {"name": "note_", "type": "text"},
]


async def store(api: httpx.AsyncClient, set_id: int, items: Any, **extra: str) -> httpx.Response:
    return await api.post(
        "/api/storeResults", data={"setId": str(set_id), "results": json.dumps(items), **extra}
    )


async def prepared_set(api: httpx.AsyncClient, name: str, *, chained: bool) -> int:
    set_id = await make_set(api, name, FIELDS)
    await make_workflow(
        api,
        set_id,
        name="all changes",
        triggers={"entry": True, "modification": {}},
        signals=[{"type": "webhook", "url": RECEIVER, "subject": "{{ batchnumber_ }} {{ action }}"}],
    )
    await make_workflow(
        api,
        set_id,
        name="released only",
        triggers={"entry": True, "modification": {"fields": ["status_"]}},
        filter={"field": "status_", "op": "eq", "value": "released"},
        signals=[{"type": "webhook", "url": RECEIVER + "/released", "payload": "result", "ordered": True}],
    )
    if chained:
        # Never fires, but its chained signal makes the set's results go one at a time.
        await make_workflow(
            api,
            set_id,
            name="chained",
            triggers={"entry": True},
            filter={"field": "note_", "op": "eq", "value": "never"},
            signals=[{"type": "update_result", "values": {"note_": "x"}}],
        )
    return set_id


def written(ctx: AppContext, set_id: int) -> dict[str, Any]:
    """What a call left behind, with ids made relative so two sets can be compared."""
    with ctx.db.reading() as tx:
        rows = list(tx.execute(select(results).where(results.c.set_id == set_id).order_by(results.c.id)))
        evs = list(tx.execute(select(events).where(events.c.set_id == set_id).order_by(events.c.id)))
        dels = list(
            tx.execute(select(deliveries).where(deliveries.c.set_id == set_id).order_by(deliveries.c.id))
        )
    first = rows[0].id
    event_index = {e.id: i for i, e in enumerate(evs)}

    def strip(body: str) -> Any:
        parsed = json.loads(body)
        if "results" in parsed:
            parsed["results"]["@id"] -= first
            parsed["results"].pop("date")
            parsed["changes"].pop("date", None)  # the clock may tick between the two sets
            for key in ("event_id", "occurred_at", "workflow", "set"):
                parsed.pop(key)
        else:
            parsed["@id"] -= first
        parsed.pop("date", None)
        return parsed

    return {
        "results": [(r.id - first, r.version, dict(r.values)) for r in rows],
        "events": [
            (
                e.result_id - first,
                e.action,
                {k: v for k, v in e.changes.items() if k != "date"},
                [(v["fired"], v["reason"]) for v in e.evaluations][:2],
            )
            for e in evs
        ],
        "deliveries": [
            (event_index[d.event_id], d.result_id - first, d.url, d.ordered, strip(d.body)) for d in dels
        ],
    }


CALL = [
    {"batchnumber_": "B-1", "status_": "draft", "ph_": 6.1, "count_": 1},
    {"batchnumber_": "B-2", "status_": "released", "ph_": 6.2, "count_": 2},
    {"batchnumber_": "B-1", "status_": "released"},  # the first again: an update in the same call
    {"batchnumber_": "B-2", "status_": "released"},  # changes nothing: no version, no event
    {"batchnumber_": "B-3", "status_": "new label", "note_": "added"},  # addListOptions
    {"batchnumber_": "B-1", "ph_": None, "note_": "cleared ph"},
]


async def test_batch_and_one_by_one_write_the_same(api: httpx.AsyncClient, ctx: AppContext) -> None:
    batched = await prepared_set(api, "batched", chained=False)
    single = await prepared_set(api, "one by one", chained=True)
    with ctx.db.reading() as tx:
        assert fanout.can_batch(tx, batched) and not fanout.can_batch(tx, single)
    answers = []
    for set_id in (batched, single):
        seeded = await store(api, set_id, [{"batchnumber_": "B-0", "count_": 3}])
        assert seeded.status_code == 200, seeded.text
        seed_id = seeded.json()["results"][0]["@id"]
        call = [*CALL, {"@id": seed_id, "status_": "released"}, {"batchnumber_": "B-0", "count_": "3"}]
        response = await store(api, set_id, call, keyField="batchnumber_", addListOptions="true")
        assert response.status_code == 200, response.text
        body = response.json()
        answers.append(
            ([(r["@id"] - seed_id, r["action"]) for r in body["results"]], body["created"], body["updated"])
        )
    assert answers[0] == answers[1]
    assert answers[0] == (
        [
            (1, "created"),
            (2, "created"),
            (1, "updated"),
            (2, "updated"),
            (3, "created"),
            (1, "updated"),
            (0, "updated"),
            (0, "updated"),
        ],
        3,
        5,
    )
    assert written(ctx, batched) == written(ctx, single)
    state = written(ctx, batched)
    assert [r[:2] for r in state["results"]] == [(0, 2), (1, 3), (2, 1), (3, 1)]
    assert [e[1] for e in state["events"]] == ["new", "new", "new", "modified", "new", "modified", "modified"]
    # Every event's deliveries follow it, in event order: ordered signals stay in order.
    assert [d[0] for d in state["deliveries"]] == sorted(d[0] for d in state["deliveries"])
    assert len(state["deliveries"]) == 7 + 3  # every event fires "all changes"; 3 release a batch


async def test_a_bad_result_stores_nothing_in_a_batch(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = await prepared_set(api, "batched", chained=False)
    response = await store(
        api,
        set_id,
        [{"batchnumber_": "B-1"}, {"batchnumber_": "B-2", "ph_": "acid"}, {"@id": 999999, "ph_": 1}],
        keyField="batchnumber_",
    )
    assert response.status_code == 400
    assert [e["index"] for e in response.json()["errors"]] == [1, 2]
    with ctx.db.reading() as tx:
        assert tx.execute(select(results.c.id).where(results.c.set_id == set_id)).first() is None
        assert tx.execute(select(deliveries.c.id).where(deliveries.c.set_id == set_id)).first() is None
    missing = await store(api, set_id, [{"batchnumber_": "B-9"}], keyField="batchnumber_", editOnly="true")
    assert missing.status_code == 400 and "editOnly" in missing.json()["error"]


async def test_key_lookup_sees_results_a_chained_signal_made_in_the_same_call(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    set_id = await make_set(api, "copies", FIELDS)
    await make_workflow(
        api,
        set_id,
        name="copy",
        triggers={"entry": True},
        filter={"field": "note_", "op": "ne", "value": "copy"},
        signals=[
            {
                "type": "transfer",
                "set_id": set_id,
                "key_field": "batchnumber_",
                "values": {"batchnumber_": "{{ batchnumber_ }}-copy", "note_": "copy"},
            }
        ],
    )
    response = await store(
        api,
        set_id,
        [{"batchnumber_": "B-1"}, {"batchnumber_": "B-1-copy", "count_": 7}],
        keyField="batchnumber_",
    )
    assert response.status_code == 200, response.text
    assert [r["action"] for r in response.json()["results"]] == ["created", "updated"]
    with ctx.db.reading() as tx:
        rows = list(tx.execute(select(results).where(results.c.set_id == set_id).order_by(results.c.id)))
    assert [(r.values["batchnumber_"], r.values.get("count_")) for r in rows] == [
        ("B-1", None),
        ("B-1-copy", 7),
    ]


async def test_numeric_keys_match_across_forms(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = await prepared_set(api, "numbers", chained=False)
    first = await store(api, set_id, [{"batchnumber_": "N", "count_": 3, "ph_": 7}], keyField="count_")
    again = await store(api, set_id, [{"batchnumber_": "N2", "count_": "3"}], keyField="count_")
    by_ph = await store(api, set_id, [{"batchnumber_": "N3", "ph_": "7.0"}], keyField="ph_")
    assert [r.json()["results"][0]["action"] for r in (first, again, by_ph)] == [
        "created",
        "updated",
        "updated",
    ]
    assert len({r.json()["results"][0]["@id"] for r in (first, again, by_ph)}) == 1
