"""The seam between a result change and the workflows of its set, inside the change's transaction.

For each event: every workflow of the set is evaluated (trigger, then filter, on the result as it
is after the change, or as it was for ``deleted``); a fired webhook signal becomes one pending
delivery with its body rendered and frozen now; update_result and transfer signals run the
results service again with a deeper ``chain``; on_date schedule rows follow the result's values.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qhook.domain import filters, payloads
from qhook.domain.access import SYSTEM_ACTOR
from qhook.domain.ids import new_uid
from qhook.domain.schedule import due_at
from qhook.domain.triggers import Triggers, match, triggers_from_json
from qhook.domain.urls import origin_of
from qhook.errors import QhookError
from qhook.store import deliveries as delivery_store
from qhook.store import queue
from qhook.store import sets as set_store
from qhook.store import workflows as store
from qhook.store.compat_queries import savepoint
from qhook.store.workflows import SignalRecord, WorkflowRecord

if TYPE_CHECKING:
    from qhook.context import AppContext
    from qhook.domain.fields import FieldDef
    from qhook.store.db import Tx
    from qhook.store.events import EventRecord
    from qhook.store.sets import SetRecord

logger = logging.getLogger(__name__)
EMAIL_NOT_SUPPORTED = "email signal: not supported yet"


@dataclass(frozen=True, slots=True)
class Decision:
    fire: bool
    reason: str


@dataclass
class Firing:
    """What firing one workflow for one event did (also what the preview shows)."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    delivery_ids: list[int] = field(default_factory=list)


def snapshot_of(event: EventRecord) -> Mapping[str, Any] | None:
    """The result the filter and templates see: after the change, or as it was when deleted."""
    return event.before if event.action == "deleted" else event.after


def decide(
    workflow: WorkflowRecord,
    triggers: Triggers,
    node: filters.Node | None,
    *,
    action: str,
    changes: Mapping[str, Any],
    snapshot: Mapping[str, Any] | None,
    chain: Mapping[str, Any] | None,
) -> Decision:
    """Pure: does this workflow fire for this event, and why (not)."""
    if not workflow.active:
        return Decision(False, "inactive")
    if chain and workflow.id in (chain.get("workflows") or []):
        return Decision(False, f"workflow already in chain (origin {chain.get('origin_event')}): stopped")
    matched, trigger_reason = match(triggers, action, changes)
    if not matched:
        return Decision(False, trigger_reason)
    met, filter_reason = filters.evaluate(node, snapshot, changes)
    if not met:
        return Decision(False, filter_reason)
    return Decision(True, f"fired: {trigger_reason}; {filter_reason}")


def field_types(fields: Sequence[FieldDef]) -> dict[str, str]:
    return {f.name: f.type for f in fields}


def triggers_of(workflow: WorkflowRecord, fields: Sequence[FieldDef]) -> Triggers:
    return triggers_from_json(workflow.triggers, field_types(fields))


def filter_of(workflow: WorkflowRecord, fields: Sequence[FieldDef]) -> filters.Node | None:
    """The stored filter, parsed again against today's fields; a filter that no longer fits raises."""
    return filters.parse_filter(workflow.filter, fields)


def template_context(
    event: EventRecord, current: SetRecord, workflow: WorkflowRecord, snapshot: Mapping[str, Any] | None
) -> dict[str, Any]:
    return payloads.build_context(
        snapshot,
        actor=event.actor,
        action=event.action,
        set_info={"id": current.id, "name": current.name},
        workflow={"id": workflow.id, "name": workflow.name},
        changes=event.changes,
    )


def evaluate_one(
    tx: Tx, ctx: AppContext, event: EventRecord, current: SetRecord, workflow: WorkflowRecord
) -> tuple[Decision, Firing]:
    """Decide about one workflow and, when it fires, run its signals (deliveries and chains)."""
    fields = current.fields
    try:
        node = filter_of(workflow, fields)
    except QhookError as exc:  # e.g. a field the filter names was since deactivated or renamed
        return Decision(
            False, f"filter not met: error: stored filter no longer fits the set: {exc}"
        ), Firing()
    snapshot = snapshot_of(event)
    decision = decide(
        workflow,
        triggers_of(workflow, fields),
        node,
        action=event.action,
        changes=event.changes,
        snapshot=snapshot,
        chain=event.chain,
    )
    firing = Firing()
    if not decision.fire:
        return decision, firing
    context = template_context(event, current, workflow, snapshot)
    for signal in workflow.active_signals:
        _run_signal(tx, ctx, event, workflow, signal, context, firing)
    if firing.notes:
        decision = Decision(True, decision.reason + "; " + "; ".join(firing.notes))
    return decision, firing


def _run_signal(
    tx: Tx,
    ctx: AppContext,
    event: EventRecord,
    workflow: WorkflowRecord,
    signal: SignalRecord,
    context: Mapping[str, Any],
    firing: Firing,
) -> None:
    label = f"signal {signal.id} ({signal.type})"
    if signal.type == "webhook":
        try:
            body = payloads.render_body(
                signal.config, context, event_id=event.uid, occurred_at=event.occurred_at
            )
        except payloads.PayloadError as exc:
            firing.notes.append(f"{label} not sent: {exc}")
            return
        url = str(signal.config["url"])
        delivery_id = delivery_store.insert_delivery(
            tx,
            webhook_id=new_uid("msg", event.occurred_at),
            event_id=event.id,
            workflow_id=workflow.id,
            signal_id=signal.id,
            set_id=event.set_id,
            result_id=event.result_id,
            action=event.action,
            url=url,
            endpoint=origin_of(url),
            body=body,
            ordered=bool(signal.config.get("ordered")),
            now=event.occurred_at,
        )
        firing.delivery_ids.append(delivery_id)
        firing.bodies.append({"signal_id": signal.id, "url": url, "body": body})
        return
    if signal.type == "email":
        firing.notes.append(f"{label}: {EMAIL_NOT_SUPPORTED}")
        return
    _run_chained(tx, ctx, event, workflow, signal, context, firing, label)


def next_chain(event: EventRecord, workflow_id: int) -> dict[str, Any]:
    """The chain a signal of ``workflow_id`` passes on: one deeper, same origin, this workflow added."""
    chain = event.chain or {}
    return {
        "depth": int(chain.get("depth", 0)) + 1,
        "origin_event": chain.get("origin_event") or event.uid,
        "workflows": [*(chain.get("workflows") or []), workflow_id],
    }


def _run_chained(
    tx: Tx,
    ctx: AppContext,
    event: EventRecord,
    workflow: WorkflowRecord,
    signal: SignalRecord,
    context: Mapping[str, Any],
    firing: Firing,
    label: str,
) -> None:
    from qhook.services import results  # results imports this module; import at call time

    chain = next_chain(event, workflow.id)
    if chain["depth"] > ctx.settings.max_chain_depth:
        firing.notes.append(
            f"{label} stopped: chain depth {chain['depth']} exceeds QHOOK_MAX_CHAIN_DEPTH"
            f" ({ctx.settings.max_chain_depth}), origin {chain['origin_event']}"
        )
        return
    try:
        values = {
            name: payloads.render_value(value, context) for name, value in signal.config["values"].items()
        }
    except payloads.PayloadError as exc:
        firing.notes.append(f"{label} not run: {exc}")
        return
    try:
        with savepoint(tx):
            if signal.type == "update_result":
                if event.action == "deleted" or event.result_id is None:
                    firing.notes.append(f"{label} skipped: the result was deleted")
                    return
                results.update_result_tx(
                    tx,
                    ctx,
                    set_id=event.set_id,
                    result_id=event.result_id,
                    values=values,
                    actor=SYSTEM_ACTOR,
                    chain=chain,
                )
            else:
                target = int(signal.config["set_id"])
                key_field = signal.config.get("key_field")
                if key_field:
                    results.upsert_by_key_tx(
                        tx,
                        ctx,
                        set_id=target,
                        key_field=key_field,
                        values=values,
                        actor=SYSTEM_ACTOR,
                        chain=chain,
                    )
                else:
                    results.create_result_tx(
                        tx, ctx, set_id=target, values=values, actor=SYSTEM_ACTOR, chain=chain
                    )
    except QhookError as exc:
        # The change that fired the workflow still commits; the failed chain step is on record.
        firing.notes.append(f"{label} failed: {exc.message}")
        logger.info(
            "chained signal failed",
            extra={"action": "chain_failed", "signal_id": signal.id, "event": event.uid},
        )


def update_schedules(
    tx: Tx, ctx: AppContext, event: EventRecord, current: SetRecord, workflows: Sequence[WorkflowRecord]
) -> None:
    """Move, create or drop this result's on_date schedule rows after a change."""
    if event.result_id is None:
        return
    if event.action == "deleted":
        store.drop_schedules_of_result(tx, event.result_id)
        return
    if event.action not in ("new", "modified"):
        return
    for workflow in workflows:
        triggers = triggers_of(workflow, current.fields)
        if triggers.on_date is None:
            continue
        if not workflow.active:
            store.drop_schedule(tx, workflow.id, event.result_id)
            continue
        schedule_result(tx, ctx, workflow.id, triggers, event.result_id, event.after)


def schedule_result(
    tx: Tx,
    ctx: AppContext,
    workflow_id: int,
    triggers: Triggers,
    result_id: int,
    flat: Mapping[str, Any] | None,
) -> None:
    assert triggers.on_date is not None
    try:
        due = due_at(triggers.on_date, (flat or {}).get(triggers.on_date.field), ctx.settings.timezone)
    except ValueError:
        due = None
    if due is None:
        store.drop_schedule(tx, workflow_id, result_id)
    else:
        store.put_schedule(tx, workflow_id, result_id, due)


def after_event(
    tx: Tx, ctx: AppContext, event: EventRecord, *, only_workflow_id: int | None = None
) -> list[dict[str, object]]:
    """Evaluate the set's workflows for ``event`` inside its transaction; return the evaluations.

    ``only_workflow_id``: a scheduled (``date``) or ``manual`` firing concerns that workflow alone.
    """
    current = set_store.get_set(tx, event.set_id)
    if current is None:
        return []
    workflows = store.list_workflows(tx, set_id=event.set_id)
    if only_workflow_id is not None:
        workflows = [w for w in workflows if w.id == only_workflow_id]
    if only_workflow_id is None:
        # Before the signals run: a chained change to this result schedules from its newer values.
        update_schedules(tx, ctx, event, current, workflows)
    evaluations: list[dict[str, object]] = []
    wrote = False
    for workflow in workflows:
        decision, firing = evaluate_one(tx, ctx, event, current, workflow)
        wrote = wrote or bool(firing.delivery_ids)
        evaluations.append({"workflow_id": workflow.id, "fired": decision.fire, "reason": decision.reason})
    if wrote:
        queue.notify(tx)
    return evaluations
