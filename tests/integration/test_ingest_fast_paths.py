"""storeResults' batch fan-out decides and renders as the one-event functions would, per event.

The batch renders envelope bodies from per-event JSON fragments and answers repeated decisions
from a memo; here every evaluation and every delivery body of a batch is recomputed with
``fanout.decide`` and ``payloads.render_body`` from the stored event, and must be the same
(byte for byte on SQLite, where JSON keeps its key order when read back; PostgreSQL's jsonb
does not, so there bodies are compared as JSON).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import select

from qhook.context import AppContext
from qhook.domain import payloads
from qhook.services import fanout
from qhook.store import events as event_store
from qhook.store.tables import deliveries, events
from tests.support.workflows import RECEIVER, make_set, make_workflow

FIELDS = [
    {"name": "batchnumber_", "type": "text", "required": True},
    {"name": "status_", "type": "list", "options": ["draft", "released"]},
    {"name": "ph_", "type": "number"},
    {"name": "actor", "type": "text"},  # a field named like a template variable: the variable wins
]


async def test_batch_evaluations_and_bodies_match_the_one_event_functions(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    set_id = await make_set(api, "fast paths", FIELDS)
    envelope = {"type": "webhook", "url": RECEIVER, "subject": "{{ batchnumber_ }} by {{ actor }}"}
    await make_workflow(
        api,
        set_id,
        name='acid "batches" é',
        triggers={"entry": True, "modification": {}},
        filter={"field": "ph_", "op": "lt", "value": 7},
        signals=[{**envelope, "message": "{{ set }} {{ workflow }} {{ changes }} {{ result }} {{ nope }}"}],
    )
    await make_workflow(
        api,
        set_id,
        name="status changed",
        triggers={"entry": True, "modification": {}},
        filter={"any": [{"field": "status_", "op": "changed"}, {"field": "ph_", "op": "empty"}]},
        signals=[
            {"type": "webhook", "url": RECEIVER + "/r", "payload": "result", "ordered": True},
            {
                "type": "webhook",
                "url": RECEIVER + "/t",
                "payload": "template",
                "body_template": '{"batch": "{{ batchnumber_ | upper }}"}',
            },
        ],
    )
    await make_workflow(
        api,
        set_id,
        name="jinja subject and mail",
        triggers={"entry": True, "modification": {}},
        signals=[
            {**envelope, "subject": "{{ batchnumber_ | lower }}"},
            {"type": "email", "to": "qa@example.com", "subject": "{{ batchnumber_ }}"},
        ],
    )
    items: list[dict[str, Any]] = [
        {"batchnumber_": f"B-{n % 4}", "status_": ["draft", "released"][n % 3 % 2], "ph_": ph, "actor": "x"}
        for n, ph in enumerate([6.5, 0.0, -0.0, 7, 7.0, 6.5, None, "<3", 6.5, 0.0, None, 8])
    ]
    response = await api.post(
        "/api/storeResults",
        data={"setId": str(set_id), "results": json.dumps(items), "keyField": "batchnumber_"},
    )
    assert response.status_code == 200, response.text

    sqlite = ctx.db.engine.dialect.name == "sqlite"
    with ctx.db.reading() as tx:
        plan = fanout.plan_for(tx, set_id)
        assert plan is not None and fanout.can_batch(tx, set_id)
        stored = [
            event_store.get_event(tx, row.id)
            for row in tx.execute(select(events.c.id).where(events.c.set_id == set_id).order_by(events.c.id))
        ]
        rows = list(
            tx.execute(select(deliveries).where(deliveries.c.set_id == set_id).order_by(deliveries.c.id))
        )
    assert len(stored) == 12
    signals = {s.id: (w, s) for w in plan.workflows for s in w.workflow.signals}
    checked = 0
    for event in stored:
        assert event is not None
        for wplan, evaluation in zip(plan.workflows, event.evaluations, strict=True):
            decision = fanout.decide(
                wplan.workflow,
                wplan.triggers,
                wplan.node,
                action=event.action,
                changes=event.changes,
                snapshot=event.after,
                chain=None,
            )
            assert evaluation["fired"] == decision.fire
            if sqlite:  # jsonb reorders the changes read back, and a reason lists them in order
                assert evaluation["reason"] == decision.reason
        for row in (r for r in rows if r.event_id == event.id):
            wplan, signal = signals[row.signal_id]
            context = payloads.build_context(
                event.after,
                actor=event.actor,
                action=event.action,
                set_info=plan.info,
                workflow=wplan.info,
                changes=fanout.payload_changes(event),
                result_version=event.result_version,
            )
            expected = payloads.render_body(
                signal.config,
                context,
                event_id=event.uid,
                occurred_at=event.occurred_at,
                result_version=event.result_version,
            )
            if sqlite:
                assert row.body == expected
            else:  # jsonb: key order lost, also in the dicts that {{ result }} and {{ changes }} print
                assert _without_message(row.body) == _without_message(expected)
            checked += 1
    assert checked == len(rows) > 12
    assert {e.result_version for e in stored if e is not None} == {1, 2, 3}  # 4 keys, 12 items
    # The -0.0 and 0.0 results have reasons that print their own value.
    reasons = [e.evaluations[0]["reason"] for e in stored if e is not None]
    assert any("-0.0" in r for r in reasons) and any("is 0.0" in r for r in reasons)


def _without_message(body: str) -> Any:
    parsed = json.loads(body)
    if isinstance(parsed, dict) and "subject" in parsed:
        parsed.pop("message")
    return parsed
