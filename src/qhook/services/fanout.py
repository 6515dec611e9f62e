"""The seam between a result change and the workflows of its set, inside the change's transaction.

For each event: every workflow of the set is evaluated (trigger, then filter, on the result as it
is after the change, or as it was for ``deleted``); a fired webhook signal becomes one pending
delivery with its body rendered and frozen now; update_result and transfer signals run the
results service again with a deeper ``chain``; on_date schedule rows follow the result's values.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from qhook.domain import filters, payloads
from qhook.domain.access import SYSTEM_ACTOR
from qhook.domain.fields import flat_result
from qhook.domain.id_batch import UidSource
from qhook.domain.ids import new_uid
from qhook.domain.schedule import due_at
from qhook.domain.triggers import Triggers, match, triggers_from_json
from qhook.domain.triggers import deactivated as triggers_deactivated
from qhook.domain.urls import origin_of
from qhook.errors import QhookError
from qhook.store import definitions, txcache
from qhook.store import deliveries as delivery_store
from qhook.store import email_outbox as email_store
from qhook.store import events as event_store
from qhook.store import sets as set_store
from qhook.store import workflows as store
from qhook.store.compat_queries import savepoint
from qhook.store.deliveries import NewDelivery
from qhook.store.email_outbox import NewEmail
from qhook.store.sets import SetRecord
from qhook.store.workflows import SignalRecord, WorkflowRecord

if TYPE_CHECKING:
    from qhook.context import AppContext
    from qhook.domain.fields import FieldDef
    from qhook.store.db import Tx
    from qhook.store.events import EventRecord
    from qhook.store.results import ResultRecord

logger = logging.getLogger(__name__)
_origin = lru_cache(maxsize=1024)(origin_of)  # the same few URLs, for every event
CHAINED_TYPES = frozenset({"update_result", "transfer"})
_MISFIT_MARK = ": error: "  # between "filter not met" and why the stored filter no longer fits


@dataclass(frozen=True, slots=True)
class Decision:
    fire: bool
    reason: str


@dataclass
class Firing:
    """What firing one workflow for one event did (also what the preview shows)."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    deliveries: int = 0


@dataclass(frozen=True, slots=True)
class WorkflowPlan:
    """A workflow with its triggers and filter parsed against the set's fields, once."""

    workflow: WorkflowRecord
    triggers: Triggers
    node: filters.Node | None
    # The stored triggers or filter no longer fit the set (a field deactivated, a list option
    # renamed): the workflow never fires, and each event says why.
    trigger_error: str | None
    filter_error: str | None
    info: dict[str, Any]  # {"id", "name"} for templates and envelopes

    @property
    def misfit(self) -> str | None:
        """Why the stored workflow no longer fits its set (for its page), or None."""
        found = self.trigger_error or self.filter_error
        return found.split(_MISFIT_MARK, 1)[-1] if found else None


@dataclass(frozen=True, slots=True)
class SetPlan:
    """What fan-out needs of a set (``plan_for``): shared while definitions stay unchanged."""

    current: SetRecord
    workflows: tuple[WorkflowPlan, ...]
    info: dict[str, Any]

    @property
    def has_chains(self) -> bool:
        """Could an event of this set write other results (update_result, transfer)?"""
        return any(
            s.type in CHAINED_TYPES
            for w in self.workflows
            if w.workflow.active
            for s in w.workflow.active_signals
        )


class Outbox:
    """Deliveries and e-mails of one event (or a batch of events), written together.

    Flushed before a chained step, so ids keep event order (ordered signals rely on it).
    """

    def __init__(self, tx: Tx, now: datetime) -> None:
        self.tx = tx
        self.now = now
        self.rows: list[NewDelivery] = []
        self.emails: list[NewEmail] = []

    def flush(
        self, event_ids: Sequence[int] | None = None, email_event_ids: Sequence[int] | None = None
    ) -> int:
        written = delivery_store.insert_deliveries(self.tx, self.rows, now=self.now, event_ids=event_ids)
        mailed = email_store.insert_emails(self.tx, self.emails, now=self.now, event_ids=email_event_ids)
        self.rows = []
        self.emails = []
        if written or mailed:
            memo = txcache.memo(self.tx)
            memo["deliveries"] = memo.get("deliveries", 0) + written + mailed
        return written


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
    trigger_error: str | None = None,
    filter_error: str | None = None,
) -> Decision:
    """Pure: does this workflow fire for this event, and why (not). The first reason in the order
    a reader checks: switched off, then the trigger, then the filter (an inactive workflow whose
    filter had gone stale was explained as "filter no longer fits")."""
    if not workflow.active:
        return Decision(False, "inactive")
    if chain and workflow.id in (chain.get("workflows") or []):
        return Decision(False, f"workflow already in chain (origin {chain.get('origin_event')}): stopped")
    if trigger_error is not None:
        return Decision(False, trigger_error)
    matched, trigger_reason = match(triggers, action, changes)
    if not matched:
        return Decision(False, trigger_reason)
    if filter_error is not None:
        return Decision(False, filter_error)
    met, filter_reason = filters.evaluate(node, snapshot, changes)
    if not met:
        return Decision(False, filter_reason)
    return Decision(True, f"fired: {trigger_reason}; {filter_reason}")


def payload_changes(event: EventRecord) -> Mapping[str, Any]:
    """``changes`` as bodies and templates see it: the changed fields of a ``modified`` event, empty
    for every other action (docs/payload.md). The event itself keeps every field a new result
    filled in, or a deleted one held, for the Hub and for ``changed`` filters."""
    return event.changes if event.action == "modified" else {}


def field_types(fields: Sequence[FieldDef]) -> dict[str, str]:
    return {f.name: f.type for f in fields}


def triggers_of(workflow: WorkflowRecord, fields: Sequence[FieldDef]) -> Triggers:
    return triggers_from_json(workflow.triggers, field_types(fields))


def filter_of(workflow: WorkflowRecord, fields: Sequence[FieldDef]) -> filters.Node | None:
    """The stored filter, parsed again against today's active fields; a filter that no longer fits
    (it names a deactivated field, a renamed list option) raises."""
    return filters.parse_filter(workflow.filter, _active(fields), inactive=_inactive(fields))


def _active(fields: Sequence[FieldDef]) -> list[FieldDef]:
    return [f for f in fields if f.active]


def _inactive(fields: Sequence[FieldDef]) -> list[str]:
    return [f.name for f in fields if not f.active]


def current_set(tx: Tx, set_id: int) -> SetRecord | None:
    """The set with its fields, read once per transaction (store writes to it forget the memo)."""
    memo = txcache.definitions(tx)
    key = ("set", set_id)
    if key not in memo:
        memo[key] = definitions.shared(tx, key, lambda: set_store.get_set(tx, set_id))
    found: SetRecord | None = memo[key]
    return found


def remember_set(tx: Tx, current: SetRecord) -> None:
    """The set as this transaction just changed it (e.g. list options added on the fly)."""
    txcache.definitions(tx)[("set", current.id)] = current


def plan_workflow(workflow: WorkflowRecord, fields: Sequence[FieldDef]) -> WorkflowPlan:
    node: filters.Node | None = None
    filter_error = trigger_error = None
    try:
        node = filter_of(workflow, fields)
    except QhookError as exc:  # e.g. a field the filter names was since deactivated or renamed
        filter_error = f"filter not met{_MISFIT_MARK}stored filter no longer fits the set: {exc}"
    deactivated = triggers_deactivated(workflow.triggers, _inactive(fields))
    if deactivated is not None:  # a modification or on_date field since deactivated
        trigger_error = f"trigger not met{_MISFIT_MARK}stored trigger no longer fits the set: {deactivated}"
    return WorkflowPlan(
        workflow,
        triggers_of(workflow, fields),
        node,
        trigger_error,
        filter_error,
        {"id": workflow.id, "name": workflow.name},
    )


def plan_for(tx: Tx, set_id: int) -> SetPlan | None:
    """The set and its workflows (signals included, secrets not), parsed once per transaction."""
    memo = txcache.definitions(tx)
    key = ("plan", set_id)
    if key not in memo:
        memo[key] = definitions.shared(tx, key, lambda: _load_plan(tx, set_id))
    found: SetPlan | None = memo[key]
    return found


def _load_plan(tx: Tx, set_id: int) -> SetPlan | None:
    current = current_set(tx, set_id)
    if current is None:
        return None
    workflows = store.list_workflows(tx, set_id=set_id)
    return SetPlan(
        current,
        tuple(plan_workflow(w, current.fields) for w in workflows),
        {"id": current.id, "name": current.name},
    )


def evaluate_one(
    tx: Tx, ctx: AppContext, event: EventRecord, plan: SetPlan, wplan: WorkflowPlan, outbox: Outbox
) -> tuple[Decision, Firing]:
    """Decide about one workflow and, when it fires, run its signals (deliveries and chains)."""
    workflow = wplan.workflow
    snapshot = snapshot_of(event)
    decision = decide(
        workflow,
        wplan.triggers,
        wplan.node,
        action=event.action,
        changes=event.changes,
        snapshot=snapshot,
        chain=event.chain,
        trigger_error=wplan.trigger_error,
        filter_error=wplan.filter_error,
    )
    firing = Firing()
    if not decision.fire:
        return decision, firing
    context = payloads.build_context(
        snapshot,
        actor=event.actor,
        action=event.action,
        set_info=plan.info,
        workflow=wplan.info,
        changes=payload_changes(event),
        result_version=event.result_version,
        due_at=event.due_at,
    )
    for signal in workflow.active_signals:
        _run_signal(tx, ctx, event, workflow, signal, context, firing, outbox)
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
    outbox: Outbox,
) -> None:
    label = f"signal {signal.id} ({signal.type})"
    if signal.type == "webhook":
        try:
            body = payloads.render_body(
                signal.config,
                context,
                event_id=event.uid,
                occurred_at=event.occurred_at,
                result_version=event.result_version,
                due_at=event.due_at,
            )
        except payloads.PayloadError as exc:
            firing.notes.append(f"{label} not sent: {exc}")
            return
        url = str(signal.config["url"])
        outbox.rows.append(
            NewDelivery(
                webhook_id=new_uid("msg", event.occurred_at),
                event_id=event.id,
                workflow_id=workflow.id,
                signal_id=signal.id,
                set_id=event.set_id,
                result_id=event.result_id,
                action=event.action,
                url=url,
                endpoint=_origin(url),
                body=body,
                ordered=bool(signal.config.get("ordered")),
            )
        )
        firing.deliveries += 1
        firing.bodies.append({"signal_id": signal.id, "url": url, "body": body})
        return
    if signal.type == "email":
        try:
            subject, message = render_email(signal.config, context)
        except payloads.PayloadError as exc:
            firing.notes.append(f"{label} not sent: {exc}")
            return
        outbox.emails.append(
            NewEmail(
                event_id=event.id,
                workflow_id=workflow.id,
                signal_id=signal.id,
                set_id=event.set_id,
                result_id=event.result_id,
                recipients=recipients_of(signal.config),
                subject=subject,
                body=message,
            )
        )
        return
    # The chained change writes its own event and deliveries: this event's go first.
    outbox.flush()
    _run_chained(tx, ctx, event, workflow, signal, context, firing, label)


def recipients_of(config: Mapping[str, Any]) -> tuple[str, ...]:
    to = config.get("to") or []
    return tuple([to] if isinstance(to, str) else to)


def render_email(config: Mapping[str, Any], context: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, message) of an e-mail signal; the subject is one line (nothing to inject)."""
    subject = " ".join(payloads.render_text(str(config.get("subject") or ""), context).split())
    message = payloads.render_text(str(config.get("message") or ""), context)
    return subject[:900], message


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


def update_schedules(tx: Tx, ctx: AppContext, event: EventRecord, wplans: Sequence[WorkflowPlan]) -> None:
    """Move, create or drop this result's on_date schedule rows after a change."""
    if event.result_id is None:
        return
    if event.action == "deleted":
        store.drop_schedules_of_result(tx, event.result_id)
        return
    if event.action not in ("new", "modified"):
        return
    for wplan in wplans:
        on_date = wplan.triggers.on_date
        if on_date is None:
            continue
        if not wplan.workflow.active or wplan.trigger_error is not None:
            store.drop_schedule(tx, wplan.workflow.id, event.result_id)
            continue
        # A due time already past is sent when the result is entered or its date changes, not
        # after an edit of another field (that replayed the past of a new workflow, or sent a
        # due time a second time after the workflow was switched off and on).
        fire_past = event.action == "new" or on_date.field in event.changes
        schedule_result(
            tx,
            ctx,
            wplan.workflow.id,
            wplan.triggers,
            event.result_id,
            event.after,
            event.occurred_at,
            fire_past=fire_past,
        )


def schedule_result(
    tx: Tx,
    ctx: AppContext,
    workflow_id: int,
    triggers: Triggers,
    result_id: int,
    flat: Mapping[str, Any] | None,
    now: datetime,
    *,
    fire_past: bool = True,
) -> None:
    assert triggers.on_date is not None
    try:
        due = due_at(triggers.on_date, (flat or {}).get(triggers.on_date.field), ctx.settings.timezone)
    except ValueError:
        due = None
    if due is None:
        store.drop_schedule(tx, workflow_id, result_id)
    else:
        store.put_schedule(tx, workflow_id, result_id, due, now, ctx.settings.timezone, fire_past=fire_past)


def fire_for_workflow(
    tx: Tx,
    ctx: AppContext,
    workflow_id: int,
    current: SetRecord,
    result: ResultRecord,
    *,
    action: str,
    actor: str,
    now: datetime,
    due_at: datetime | None = None,
) -> tuple[EventRecord, list[dict[str, object]]]:
    """A ``date`` or ``manual`` firing: an event about the result as it stands (before = after),
    evaluated for that one workflow, with its evaluations kept on it. ``due_at``: the due time
    of a ``date`` firing."""
    flat = flat_result(result.id, result.date, result.values, current.fields)
    event = event_store.insert_record(
        tx,
        event_store.new_event(
            uid=new_uid("evt", now),
            set_id=current.id,
            result_id=result.id,
            action=action,
            actor=actor,
            occurred_at=now,
            before=flat,
            after=flat,
            changes={},
            result_version=result.version,
            due_at=due_at,
        ),
    )
    evaluations = after_event(tx, ctx, event, only_workflow_id=workflow_id)
    event_store.set_evaluations(tx, event.id, evaluations)
    return event, evaluations


def after_event(
    tx: Tx, ctx: AppContext, event: EventRecord, *, only_workflow_id: int | None = None
) -> list[dict[str, object]]:
    """Evaluate the set's workflows for ``event`` inside its transaction; return the evaluations.

    ``only_workflow_id``: a scheduled (``date``) or ``manual`` firing concerns that workflow alone.
    """
    plan = plan_for(tx, event.set_id)
    if plan is None:
        return []
    wplans = plan.workflows
    if only_workflow_id is not None:
        wplans = tuple(w for w in wplans if w.workflow.id == only_workflow_id)
    else:
        # Before the signals run: a chained change to this result schedules from its newer values.
        update_schedules(tx, ctx, event, wplans)
    evaluations: list[dict[str, object]] = []
    outbox = Outbox(tx, event.occurred_at)
    for wplan in wplans:
        decision, _firing = evaluate_one(tx, ctx, event, plan, wplan, outbox)
        evaluations.append(
            {"workflow_id": wplan.workflow.id, "fired": decision.fire, "reason": decision.reason}
        )
    outbox.flush()  # on PostgreSQL the insert itself wakes the workers (a trigger, migration 0005)
    return evaluations


# --- many events at once (storeResults) ---------------------------------------------------------


def can_batch(tx: Tx, set_id: int) -> bool:
    """Events of this set can be fanned out together: no signal of it writes results in turn."""
    plan = plan_for(tx, set_id)
    return plan is not None and not plan.has_chains


@dataclass(frozen=True, slots=True)
class _PlannedSignal:
    """A webhook signal whose body ``payloads.BodyPlan`` renders without a template context."""

    signal_id: int
    url: str
    endpoint: str
    ordered: bool
    body: payloads.BodyPlan


def _planned_signals(plan: SetPlan, wplan: WorkflowPlan) -> tuple[_PlannedSignal, ...] | None:
    """The workflow's signals, prepared for many events; None when one of them needs the general
    path (``evaluate_one``): an e-mail, a body template, a subject or message beyond plain names."""
    planned: list[_PlannedSignal] = []
    for signal in wplan.workflow.active_signals:
        if signal.type != "webhook":
            return None
        body = payloads.body_plan(signal.config, set_info=plan.info, workflow=wplan.info)
        if body is None:
            return None
        url = str(signal.config["url"])
        planned.append(_PlannedSignal(signal.id, url, _origin(url), bool(signal.config.get("ordered")), body))
    return tuple(planned)


class _DecisionMemo:
    """``decide`` for many events of one batch, answered once per distinct input.

    The answer (and its reason text) depends only on the action, the changed fields' names for a
    modification, and the values and changed-ness of the fields the filter reads; with ten
    workflows per result, deciding again for the same inputs was a tenth of an ingest.
    """

    def __init__(self) -> None:
        self._answers: dict[tuple[object, ...], Decision] = {}
        self._inputs: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def decide(self, wplan: WorkflowPlan, event: EventRecord, snapshot: Mapping[str, Any] | None) -> Decision:
        workflow_id = wplan.workflow.id
        inputs = self._inputs.get(workflow_id)
        if inputs is None:
            inputs = self._inputs[workflow_id] = filters.inputs(wplan.node)
        key: list[object] = [workflow_id, event.action]
        if event.action == "modified":
            key.append(tuple(event.changes))
        values = snapshot or {}
        for name in inputs[0]:
            value = values.get(name)
            # Equal floats may print differently (0.0, -0.0), and reasons print values.
            key.append(repr(value) if type(value) is float else value)
            key.append(type(value))
        key.extend(name in event.changes for name in inputs[1])
        frozen = tuple(key)
        try:
            found = self._answers.get(frozen)
        except TypeError:  # a value that cannot be a key: decide without the memo
            frozen, found = (), None
        if found is not None and event.chain is None:
            return found
        decision = decide(
            wplan.workflow,
            wplan.triggers,
            wplan.node,
            action=event.action,
            changes=event.changes,
            snapshot=snapshot,
            chain=event.chain,
            trigger_error=wplan.trigger_error,
            filter_error=wplan.filter_error,
        )
        if frozen and event.chain is None:
            self._answers[frozen] = decision
        return decision


def fan_out_many(tx: Tx, ctx: AppContext, events: Sequence[EventRecord]) -> list[int]:
    """``after_event`` for many events of one set without chains (``can_batch``), in few statements.

    The evaluations are decided before the events are written (their ids come with the insert);
    then every delivery goes in one executemany, in event order, so each committed change still
    has its event and its deliveries. Returns the events' ids, in order.

    Measured on SQLite (bench/ingest.py): a webhook body per firing workflow and event is most of
    the work, so the parts an event's bodies share are serialised once per event
    (``payloads.event_view``), also serving as the event row's JSON.
    """
    if not events:
        return []
    plan = plan_for(tx, events[0].set_id)
    if plan is None or plan.has_chains:
        raise RuntimeError("fan_out_many needs a set whose workflows have no chained signals")
    workflows = [(wplan, _planned_signals(plan, wplan)) for wplan in plan.workflows]
    outbox = Outbox(tx, events[0].occurred_at)
    rows: list[delivery_store.DeliveryValues] = []
    slices: list[tuple[int, int]] = []
    all_evaluations: list[list[dict[str, object]]] = []
    texts: list[event_store.EventTexts] = []
    dumps = payloads.dumps
    decisions = _DecisionMemo()
    uids = UidSource(len(events) * sum(len(p or ()) for _w, p in workflows))
    for event in events:
        start, mail_start = len(rows), len(outbox.emails)
        snapshot = snapshot_of(event)
        after_json = dumps(event.after)
        changes_json = dumps(event.changes)
        texts.append((dumps(event.before), after_json, changes_json))
        view: payloads.EventView | None = None
        evaluations: list[dict[str, object]] = []
        for wplan, planned in workflows:
            if planned is None:
                decision, _firing = evaluate_one(tx, ctx, event, plan, wplan, outbox)
                rows.extend(_values_of(r) for r in outbox.rows)
                outbox.rows.clear()
            else:
                decision = decisions.decide(wplan, event, snapshot)
                if decision.fire and planned:
                    if view is None:
                        view = payloads.event_view(
                            snapshot,
                            action=event.action,
                            actor=event.actor,
                            changes=payload_changes(event),
                            event_id=event.uid,
                            occurred_at=event.occurred_at,
                            result_json=after_json
                            if snapshot is not None and snapshot is event.after
                            else None,
                            changes_json=changes_json if event.action == "modified" else "{}",
                            result_version=event.result_version,
                        )
                    for signal in planned:
                        rows.append(
                            (
                                uids.new_uid("msg", event.occurred_at),
                                wplan.workflow.id,
                                signal.signal_id,
                                event.set_id,
                                event.result_id,
                                event.action,
                                signal.url,
                                signal.endpoint,
                                signal.body.render(view),
                                signal.ordered,
                            )
                        )
            evaluations.append(
                {"workflow_id": wplan.workflow.id, "fired": decision.fire, "reason": decision.reason}
            )
        all_evaluations.append(evaluations)
        slices.append((len(rows) - start, len(outbox.emails) - mail_start))
    ids = event_store.insert_events(tx, events, evaluations=all_evaluations, texts=texts)
    event_ids: list[int] = []
    email_event_ids: list[int] = []
    for event_id, (n_deliveries, n_emails) in zip(ids, slices, strict=True):
        event_ids.extend([event_id] * n_deliveries)
        email_event_ids.extend([event_id] * n_emails)
    if any(w.triggers.on_date is not None for w in plan.workflows):
        for event, event_id in zip(events, ids, strict=True):
            update_schedules(tx, ctx, replace(event, id=event_id), plan.workflows)
    written = delivery_store.insert_delivery_rows(tx, rows, event_ids, now=outbox.now)
    mailed = email_store.insert_emails(tx, outbox.emails, now=outbox.now, event_ids=email_event_ids)
    counts = txcache.memo(tx)
    if written or mailed:
        counts["deliveries"] = counts.get("deliveries", 0) + written + mailed
    return ids


def _values_of(row: NewDelivery) -> delivery_store.DeliveryValues:
    return (
        row.webhook_id,
        row.workflow_id,
        row.signal_id,
        row.set_id,
        row.result_id,
        row.action,
        row.url,
        row.endpoint,
        row.body,
        row.ordered,
    )
