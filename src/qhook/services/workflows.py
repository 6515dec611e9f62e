"""Workflows: create, change, delete (audited), signing secrets, preview and manual runs."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.domain import credentials, filters, payloads, signing
from qhook.domain import headers as header_names
from qhook.domain.fields import (
    changes_between,
    check_required,
    coerce_values,
    flat_result,
    format_iso,
    merge_values,
)
from qhook.domain.ids import is_id
from qhook.domain.inspector import is_own_inspector
from qhook.domain.schedule import due_at
from qhook.domain.triggers import OnDate, named_fields
from qhook.domain.urls import origin_of, origin_or_none, parse_target
from qhook.domain.workflows import (
    OverlapView,
    SignalSpec,
    WorkflowSpec,
    overlaps,
    parse_workflow,
    transfer_set_ids,
)
from qhook.errors import Conflict, NotFound, ValidationFailed, field_error
from qhook.services import audit, auth_profiles, fanout
from qhook.store import auth_profiles as profile_store
from qhook.store import deliveries as delivery_store
from qhook.store import events as event_store
from qhook.store import results as result_store
from qhook.store import sets as set_store
from qhook.store import workflows as store
from qhook.store.db import Database, Tx
from qhook.store.sets import SetRecord
from qhook.store.workflows import WorkflowRecord

SECRET_GRACE = timedelta(hours=24)
MAX_RUN_RESULTS = 1000
# Results read (and their schedules written) at a time when a workflow is (re)scheduled.
RESULTS_PER_PAGE = 500


def new_signing_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def as_document(workflow: WorkflowRecord) -> dict[str, Any]:
    """The API shape: no secrets, ``secret_set`` for webhook signals; active signals only."""
    signals = []
    for signal in workflow.active_signals:
        item: dict[str, Any] = {"id": signal.id, "type": signal.type, **signal.config}
        if "headers" in item:  # saved before credentials were refused there (see domain/workflows)
            item["headers"] = credentials.redacted(item["headers"])
        if signal.type == "webhook":
            item["url"] = credentials.shown_url(str(item.get("url", "")))
            item["secret_set"] = signal.secret_set
            item["paused_reason"] = signal.paused_reason
        signals.append(item)
    return {
        "id": workflow.id,
        "name": workflow.name,
        "set_id": workflow.set_id,
        "active": workflow.active,
        "triggers": dict(workflow.triggers),
        "filter": workflow.filter,
        "error_email": workflow.error_email,
        "signals": signals,
        "created_at": workflow.created_at,
        "updated_at": workflow.updated_at,
    }


def _set_for(tx: Tx, set_id: object) -> SetRecord:
    if not is_id(set_id):
        raise field_error("set_id", "the id of a set")
    current = set_store.get_set(tx, set_id)
    if current is None:
        raise field_error("set_id", f"an existing set; there is no set {set_id}")
    return current


def _validate(
    tx: Tx, ctx: AppContext, doc: Mapping[str, Any], *, actor: str
) -> tuple[WorkflowSpec, SetRecord]:
    current = _set_for(tx, doc.get("set_id"))
    others = {s.id: s.active_fields for s in set_store.list_sets(tx, sorted(transfer_set_ids(doc)))}

    def check_url(url: str) -> str:
        # qhook's own inspector bins are always allowed, even over http:// (issue 6).
        allow_http = ctx.settings.allow_http or is_own_inspector(url, ctx.settings)
        # The bare URL: a legacy user:password@ part becomes an auth profile (_legacy_credentials).
        return parse_target(url, allow_http=allow_http, allow_userinfo=True).url

    inactive = [f.name for f in current.fields if not f.active]
    spec = parse_workflow(
        doc, current.active_fields, other_sets=others, check_url=check_url, inactive=inactive
    )
    spec = _legacy_credentials(tx, ctx, doc, spec, actor)
    for index, signal in enumerate(spec.signals):
        profile_id = signal.config.get("auth_profile_id") if signal.type == "webhook" else None
        if profile_id is not None:
            _check_profile(tx, profile_id, str(signal.config["url"]), current.id, f"signals[{index}]")
    return spec, current


def _legacy_credentials(
    tx: Tx, ctx: AppContext, doc: Mapping[str, Any], spec: WorkflowSpec, actor: str
) -> WorkflowSpec:
    """Webhook URLs given as ``https://user:pass@host/...`` (as the original product takes them):
    the stored URL is bare and the pair goes into a Basic auth profile the signal refers to."""
    raw_signals = doc.get("signals") or []
    signals = list(spec.signals)
    for index, (raw, signal) in enumerate(zip(raw_signals, spec.signals, strict=False)):
        url = raw.get("url") if isinstance(raw, dict) and signal.type == "webhook" else None
        if not isinstance(url, str) or "@" not in url:
            continue
        path = f"signals[{index}].url"
        target = parse_target(url.strip(), allow_http=True, allow_userinfo=True, field=path)
        if target.username is None:
            continue
        if signal.config.get("auth_profile_id") is not None:
            raise field_error(path, "a URL without user:password@ when the signal names an auth_profile_id")
        if not target.username or not target.password:
            raise field_error(path, "user:password@ with both a user name and a password, or an auth profile")
        profile_id = auth_profiles.legacy_basic_profile_tx(
            tx,
            ctx,
            host=target.host,
            username=target.username,
            password=target.password,
            set_id=spec.set_id,
            actor=actor,
        )
        signals[index] = replace(signal, config={**signal.config, "auth_profile_id": profile_id})
    return replace(spec, signals=tuple(signals))


def _check_profile(tx: Tx, profile_id: int, url: str, set_id: int, path: str) -> None:
    profile = profile_store.profile_by_id(tx, profile_id)
    if profile is None:
        raise field_error(
            f"{path}.auth_profile_id", f"an existing auth profile; there is none with id {profile_id}"
        )
    auth_profiles.check_serves(profile, set_id, f"{path}.auth_profile_id")
    auth_profiles.check_allowed(profile, url, f"{path}.url")


def _write_signals(
    tx: Tx, ctx: AppContext, workflow_id: int, specs: Sequence[SignalSpec], existing: WorkflowRecord | None
) -> dict[int, str]:
    """Create or update signals in order; deactivate the ones left out. Returns new plain secrets."""
    known = {s.id: s for s in existing.signals} if existing else {}
    created_secrets: dict[int, str] = {}
    kept: list[int] = []
    now = utcnow()
    for position, spec in enumerate(specs):
        if spec.id is not None:
            old = known.get(spec.id)
            if old is None:
                raise field_error(f"signals[{position}].id", "the id of a signal of this workflow")
            if old.type != spec.type:
                raise field_error(f"signals[{position}].type", f"{old.type!r}: a signal keeps its type")
            store.update_signal(tx, spec.id, position=position, config=spec.config, active=True)
            if spec.type == "webhook" and spec.secret is not None:
                _replace_secret(tx, ctx, spec.id, spec.secret, now)
            url = spec.config.get("url")
            if spec.type == "webhook" and isinstance(url, str) and url != old.config.get("url"):
                # What waits to be sent goes where the signal now sends (it was fixed, or moved).
                delivery_store.follow_url(tx, url, origin_of(url), now, signal_id=spec.id)
            kept.append(spec.id)
            continue
        plain = (spec.secret or new_signing_secret()) if spec.type == "webhook" else None
        signal_id = store.insert_signal(
            tx,
            workflow_id=workflow_id,
            position=position,
            type=spec.type,
            config=spec.config,
            secret_enc=ctx.box.encrypt(plain) if plain else None,
        )
        if plain:
            created_secrets[signal_id] = plain
        kept.append(signal_id)
    removed = store.deactivate_signals(tx, workflow_id, kept)
    # Deliveries of a removed signal would wait forever (the worker skips inactive signals).
    delivery_store.cancel_unfinished_of_signals(
        tx,
        removed,
        hint=f"Cancelled: the signal was removed from workflow {workflow_id} on {_day(now)}.",
        now=now,
    )
    return created_secrets


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _replace_secret(tx: Tx, ctx: AppContext, signal_id: int, plain: str, now: datetime) -> datetime | None:
    """The old secret keeps signing alongside the new one for the grace period; returns until when.

    The secret the signal signs with already changes nothing: "rotating" to it made it its own
    previous secret, and the one before stopped signing at once while the answer promised 24 h."""
    current = store.signal_secrets(tx, signal_id)
    old = current.secret_enc if current else None
    if current is not None and old is not None and ctx.box.decrypt(old) == plain:
        return current.previous_secret_until
    until = now + SECRET_GRACE if old else None
    store.set_signal_secrets(
        tx,
        signal_id,
        secret_enc=ctx.box.encrypt(plain),
        previous_secret_enc=old,
        previous_secret_until=until,
    )
    return until


def _audit_details(spec: WorkflowSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "set_id": spec.set_id,
        "active": spec.active,
        "signals": [
            {
                "type": s.type,
                "url": credentials.shown_url(str(s.config["url"])) if "url" in s.config else None,
            }
            for s in spec.signals
        ],
    }


def refit_schedules(tx: Tx, ctx: AppContext, current: SetRecord, toggled: Collection[str]) -> None:
    """After fields of the set were deactivated or activated again (``toggled``): a workflow whose
    triggers name one keeps no on_date schedule while it no longer fits, and gets its future due
    times back once it fits again, as when it is switched on. Rows left waiting had fired into the
    broken workflow ("trigger no longer fits") and that due time was gone for good."""
    for workflow in store.list_workflows(tx, set_id=current.id):
        if not _names_any_of(workflow, toggled):
            continue
        if fanout.plan_workflow(workflow, current.fields).trigger_error is not None:
            store.drop_schedules_of_workflow(tx, workflow.id)
        else:
            _reschedule(tx, ctx, workflow, current)


def _names_any_of(workflow: WorkflowRecord, toggled: Collection[str]) -> bool:
    return any(name in toggled for _, name in named_fields(workflow.triggers))


def _reschedule(tx: Tx, ctx: AppContext, workflow: WorkflowRecord, current: SetRecord) -> None:
    """Schedule on_date for the set's existing results; due times already past are not fired
    (a new workflow does not replay history, a new offset does not send again what was sent),
    except rows that were waiting and had not fired yet."""
    triggers = fanout.triggers_of(workflow, current.fields)
    if triggers.on_date is None or not workflow.active:
        store.drop_schedules_of_workflow(tx, workflow.id)
        return
    now = utcnow()
    after_id = None
    while True:
        page = result_store.list_results(tx, current.id, after_id=after_id, limit=RESULTS_PER_PAGE)
        if not page:
            break
        existing = store.schedules_by_result(tx, workflow.id, page[0].id, page[-1].id)
        dues: dict[int, datetime] = {}
        gone: list[int] = []
        for result in page:
            flat = flat_result(result.id, result.date, result.values, current.fields)
            try:
                due = due_at(triggers.on_date, flat.get(triggers.on_date.field), ctx.settings.timezone)
            except ValueError:
                due = None
            row = existing.get(result.id)
            if due is None:
                if row is not None:
                    gone.append(row.id)
            elif due >= now or row is not None:
                dues[result.id] = due
        store.put_schedules(tx, workflow.id, dues, existing, now, ctx.settings.timezone)
        store.drop_schedules(tx, gone)
        after_id = page[-1].id


def create_workflow(
    ctx: AppContext, doc: Mapping[str, Any], *, actor: str
) -> tuple[WorkflowRecord, dict[int, str]]:
    """Validate and store a workflow; returns it and each webhook signal's secret (shown this once)."""
    now = utcnow()
    with ctx.db.transaction() as tx:
        spec, current = _validate(tx, ctx, doc, actor=actor)
        workflow_id = store.insert_workflow(
            tx,
            set_id=spec.set_id,
            name=spec.name,
            active=spec.active,
            triggers=spec.triggers.as_json(),
            filter=spec.filter,
            error_email=spec.error_email,
            now=now,
        )
        plain_secrets = _write_signals(tx, ctx, workflow_id, spec.signals, None)
        workflow = _get(tx, workflow_id)
        _reschedule(tx, ctx, workflow, current)
        audit.record(tx, actor, "workflow.create", "workflow", workflow_id, _audit_details(spec))
    return workflow, plain_secrets


def _get(tx: Tx, workflow_id: int) -> WorkflowRecord:
    found = store.get_workflow(tx, workflow_id)
    if found is None:
        raise NotFound(f"workflow {workflow_id}: no such workflow")
    return found


def get_workflow(db: Database, workflow_id: int) -> WorkflowRecord:
    with db.reading() as tx:
        return _get(tx, workflow_id)


def list_workflows(
    db: Database, *, set_id: int | None = None, set_ids: Sequence[int] | None = None
) -> list[WorkflowRecord]:
    with db.reading() as tx:
        return store.list_workflows(tx, set_id=set_id, set_ids=set_ids)


def never_met(db: Database, workflow: WorkflowRecord) -> str | None:
    """Why the workflow's filter can never be met, when that can be seen from the filter alone."""
    with db.reading() as tx:
        plan = fanout.plan_for(tx, workflow.set_id)
    found = next((w for w in plan.workflows if w.workflow.id == workflow.id), None) if plan else None
    return filters.never_met(found.node) if found is not None else None


def misfits(db: Database, found: Sequence[WorkflowRecord]) -> dict[int, str]:
    """Workflow id -> why it no longer fits its set (a field it names deactivated, a list option
    renamed), for those that do not: they never fire until saved again or switched off."""
    wanted = {w.id for w in found}
    out: dict[int, str] = {}
    with db.reading() as tx:
        for set_id in sorted({w.set_id for w in found}):
            plan = fanout.plan_for(tx, set_id)  # the plans events are decided by, cached
            for wplan in plan.workflows if plan is not None else ():
                if wplan.workflow.id in wanted and wplan.misfit is not None:
                    out[wplan.workflow.id] = wplan.misfit
    return out


def _current_document(workflow: WorkflowRecord) -> dict[str, Any]:
    return {
        "name": workflow.name,
        "set_id": workflow.set_id,
        "active": workflow.active,
        "triggers": dict(workflow.triggers),
        "filter": workflow.filter,
        "error_email": workflow.error_email,
        "signals": [{"id": s.id, "type": s.type, **s.config} for s in workflow.active_signals],
    }


def update_workflow(
    ctx: AppContext, workflow_id: int, patch: Mapping[str, Any], *, actor: str
) -> tuple[WorkflowRecord, dict[int, str]]:
    """Merge ``patch`` into the workflow. Signals given with an ``id`` keep it (and their secret),
    signals without one are created, signals left out are deactivated."""
    if not isinstance(patch, Mapping):
        raise ValidationFailed("body: a workflow object")
    now = utcnow()
    with ctx.db.transaction() as tx:
        existing = store.get_workflow(tx, workflow_id, for_update=True)
        if existing is None:
            raise NotFound(f"workflow {workflow_id}: no such workflow")
        if "set_id" in patch and patch["set_id"] != existing.set_id:
            raise field_error("set_id", f"{existing.set_id}: a workflow stays on its set")
        if dict(patch) == {"active": False}:
            # Turning it off needs no valid document: a set, field or profile changed elsewhere
            # made every PATCH of it a 422, even this one, and it could not be stopped.
            store.update_workflow(
                tx,
                workflow_id,
                name=existing.name,
                active=False,
                triggers=existing.triggers,
                filter=existing.filter,
                error_email=existing.error_email,
                now=now,
            )
            store.drop_schedules_of_workflow(tx, workflow_id)
            audit.record(tx, actor, "workflow.update", "workflow", workflow_id, {"active": False})
            return _get(tx, workflow_id), {}
        doc, kept = _stored_credentials_aside({**_current_document(existing), **patch}, existing)
        spec, current = _validate(tx, ctx, doc, actor=actor)
        for signal in spec.signals:
            if signal.id in kept:
                signal.config["headers"] = {**signal.config.get("headers", {}), **kept[signal.id]}
        store.update_workflow(
            tx,
            workflow_id,
            name=spec.name,
            active=spec.active,
            triggers=spec.triggers.as_json(),
            filter=spec.filter,
            error_email=spec.error_email,
            now=now,
        )
        plain_secrets = _write_signals(tx, ctx, workflow_id, spec.signals, existing)
        workflow = _get(tx, workflow_id)
        _reschedule(tx, ctx, workflow, current)
        audit.record(tx, actor, "workflow.update", "workflow", workflow_id, _audit_details(spec))
    return workflow, plain_secrets


def _stored_credentials_aside(
    doc: dict[str, Any], existing: WorkflowRecord
) -> tuple[dict[str, Any], dict[int, dict[str, str]]]:
    """Static headers saved before today's rules refused them.

    A credential header may be kept (sent back unchanged or as "[redacted]", as GET shows it, or
    not touched at all) but not added or changed, and only while the signal's URL keeps its
    origin: a redacted credential must not follow the signal to a host its owner never chose. It
    is taken out of the document for the check and put back after it. A header qhook sets itself
    (User-Agent, ...) was never sent: it is dropped, so that it does not block every PATCH."""
    stored = {s.id: (dict(s.config.get("headers") or {}), str(s.config.get("url"))) for s in existing.signals}
    kept: dict[int, dict[str, str]] = {}
    signals = []
    for index, raw in enumerate(doc.get("signals") or []):
        signal_id = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(signal_id, int) and signal_id in stored and isinstance(raw.get("url"), str):
            # Sent back as GET shows it: credential query values "[redacted]" are the stored ones.
            try:
                raw = {**raw, "url": credentials.restored_url(raw["url"], stored[signal_id][1])}
            except ValueError as exc:
                raise field_error(f"signals[{index}].url", str(exc)) from exc
        headers = raw.get("headers") if isinstance(raw, dict) else None
        if not isinstance(signal_id, int) or signal_id not in stored or not isinstance(headers, dict):
            signals.append(raw)
            continue
        before, before_url = stored[signal_id]
        url = raw.get("url")
        same_origin = isinstance(url, str) and origin_or_none(url) == origin_or_none(before_url)
        unchanged = {
            name: before[name]
            for name, value in headers.items()
            if credentials.is_credential(name)
            and name in before
            and value in (before[name], credentials.REDACTED)
            and same_origin
        }
        never_sent = {name for name in headers if header_names.is_reserved(name) and name in before}
        if unchanged:
            kept[signal_id] = unchanged
        if unchanged or never_sent:
            dropped = unchanged.keys() | never_sent
            raw = {**raw, "headers": {k: v for k, v in headers.items() if k not in dropped}}
        signals.append(raw)
    return ({**doc, "signals": signals} if "signals" in doc else doc), kept


def delete_workflow(ctx: AppContext, workflow_id: int, *, actor: str) -> None:
    """Delete the workflow, its signals and schedules; its deliveries and events stay on record."""
    now = utcnow()
    with ctx.db.transaction() as tx:
        workflow = _get(tx, workflow_id)
        cancelled = delivery_store.cancel_unfinished_of_signals(
            tx,
            [s.id for s in workflow.signals],
            hint=f"Cancelled: workflow {workflow_id} was deleted on {_day(now)}.",
            now=now,
        )
        store.delete_workflow(tx, workflow_id)
        audit.record(
            tx,
            actor,
            "workflow.delete",
            "workflow",
            workflow_id,
            {"name": workflow.name, "cancelled_deliveries": cancelled},
        )


def resume_signal(ctx: AppContext, workflow_id: int, signal_id: int, *, actor: str) -> str:
    """Let a paused signal (the receiver answered 410 Gone) deliver again; its waiting deliveries go out."""
    with ctx.db.transaction() as tx:
        _webhook_signal(tx, workflow_id, signal_id)
        reason = store.resume_signal(tx, signal_id)
        if reason is None:
            raise Conflict(f"signal {signal_id} is not paused")
        audit.record(
            tx, actor, "signal.resume", "signal", signal_id, {"workflow_id": workflow_id, "was": reason}
        )
    ctx.wake()
    return reason


def _webhook_signal(tx: Tx, workflow_id: int, signal_id: int) -> WorkflowRecord:
    workflow = _get(tx, workflow_id)
    signal = next((s for s in workflow.signals if s.id == signal_id), None)
    if signal is None:
        raise NotFound(f"signal {signal_id}: no such signal in workflow {workflow_id}")
    if signal.type != "webhook":
        raise Conflict(f"signal {signal_id} is a {signal.type} signal; only webhooks have a signing secret")
    return workflow


def rotate_secret(
    ctx: AppContext, workflow_id: int, signal_id: int, *, actor: str, secret: str | None = None
) -> tuple[str, datetime | None]:
    """A new secret; the old one keeps signing for 24 hours. Returns (new secret, old valid until)."""
    if secret is not None and not signing.is_valid_secret(secret):
        raise field_error("secret", signing.SECRET_EXPECTED)
    plain = secret or new_signing_secret()
    now = utcnow()
    with ctx.db.transaction() as tx:
        _webhook_signal(tx, workflow_id, signal_id)
        until = _replace_secret(tx, ctx, signal_id, plain, now)
        audit.record(tx, actor, "signal.rotate_secret", "signal", signal_id, {"workflow_id": workflow_id})
    return plain, until


def _overlap_view(workflow: WorkflowRecord, current: SetRecord) -> OverlapView:
    return OverlapView(
        id=workflow.id,
        name=workflow.name,
        active=workflow.active,
        actions=fanout.triggers_of(workflow, current.fields).actions,
        filter=workflow.filter,
        urls=frozenset(str(s.config["url"]) for s in workflow.active_signals if s.type == "webhook"),
    )


def preview(
    ctx: AppContext,
    workflow_id: int,
    *,
    result_id: int,
    action: str,
    values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Would the workflow fire for this result and action, why, and the exact bodies; sends nothing.

    The changes are those of the result's latest event with the same action (none otherwise); for
    ``modified``, ``values`` tries a change instead: the result as it would be after it, and
    each value that differs as a change (a result never modified could not be tried at all).
    """
    if action not in ("new", "modified", "deleted", "date", "manual"):
        raise field_error("action", "one of new, modified, deleted, date, manual")
    if values is not None and action != "modified":
        raise field_error("values", 'a change to try only with "action": "modified"')
    with ctx.db.reading() as tx:
        workflow = _get(tx, workflow_id)
        current = set_store.get_set(tx, workflow.set_id)
        assert current is not None
        result = result_store.get_result(tx, workflow.set_id, result_id)
        if result is None:
            raise field_error(
                "result_id", f"a result of set {workflow.set_id}; there is no result {result_id}"
            )
        flat = flat_result(result.id, result.date, result.values, current.fields)
        latest = next(
            (e for e in event_store.list_events(tx, result_id=result_id, limit=50) if e.action == action),
            None,
        )
        changes: dict[str, Any] = dict(latest.changes) if latest else {}
        # As the event would carry it: the deletion comes after the last version (a tried change too,
        # below, when it changes something).
        version = result.version + 1 if action == "deleted" else result.version
        if values is not None:
            # Checked as the result's PATCH checks them; a list value must be an option already.
            tried = merge_values(result.values, coerce_values(current.fields, values).values)
            check_required(current.fields, tried)
            after = flat_result(result.id, result.date, tried, current.fields)
            changes, flat = changes_between(flat, after), after
            version += 1 if changes else 0
        others = store.list_workflows(tx, set_id=workflow.set_id)
        schedule = store.get_schedule(tx, workflow.id, result_id)
    plan = fanout.plan_workflow(workflow, current.fields)  # what an event would be decided by
    triggers = plan.triggers
    decision = fanout.decide(
        workflow,
        triggers,
        plan.node,
        action=action,
        changes=changes,
        snapshot=flat,
        chain=None,
        trigger_error=plan.trigger_error,
        filter_error=plan.filter_error,
    )
    now = utcnow()
    timing: dict[str, Any] = {}
    due: datetime | None = None  # a date firing's due time, as its body would carry it
    if action == "date" and triggers.on_date is not None:
        timing, no_time, due = _date_timing(ctx, triggers.on_date, flat, schedule, now)
        if no_time and decision.fire:
            decision = fanout.Decision(False, no_time)
    bodies: list[dict[str, Any]] = []
    notes: list[str] = []
    if decision.fire:
        context = payloads.build_context(
            flat,
            actor="preview",
            action=action,
            set_info={"id": current.id, "name": current.name},
            workflow={"id": workflow.id, "name": workflow.name},
            changes=changes if action == "modified" else {},
            result_version=version,
            due_at=due,
        )
        for signal in workflow.active_signals:
            if signal.type == "email":
                try:
                    subject, _message = fanout.render_email(signal.config, context)
                except payloads.PayloadError as exc:
                    notes.append(f"signal {signal.id} (email) would not be sent: {exc}")
                    continue
                to = ", ".join(fanout.recipients_of(signal.config))
                notes.append(f"signal {signal.id} (email) would mail {to}: {subject}")
                continue
            if signal.type != "webhook":
                notes.append(f"signal {signal.id} ({signal.type}) would run")
                continue
            try:
                body = payloads.render_body(
                    signal.config,
                    context,
                    event_id="evt_preview",
                    occurred_at=now,
                    result_version=version,
                    due_at=due,
                )
            except payloads.PayloadError as exc:
                notes.append(f"signal {signal.id} (webhook) would not be sent: {exc}")
                continue
            url = credentials.shown_url(str(signal.config["url"]))
            bodies.append({"signal_id": signal.id, "url": url, "body": body})
    warnings = overlaps(_overlap_view(workflow, current), [_overlap_view(o, current) for o in others])
    warnings += _mail_warnings(ctx, workflow)
    impossible = filters.never_met(plan.node)
    if impossible is not None:
        warnings.append(f"the filter can never be met ({impossible}): the workflow never fires")
    return {
        "would_fire": decision.fire,
        "reason": decision.reason,
        "changes": changes,
        "bodies": bodies,
        "notes": notes,
        "warnings": warnings,
        **timing,
    }


def _mail_warnings(ctx: AppContext, workflow: WorkflowRecord) -> list[str]:
    """What needs QHOOK_SMTP_URL and would go nowhere without it (saving it is still allowed)."""
    if ctx.settings.smtp_url:
        return []
    found = []
    if workflow.error_email:
        found.append("error_email is set, but QHOOK_SMTP_URL is empty: no error report is mailed")
    if any(s.type == "email" for s in workflow.active_signals):
        found.append("e-mail signals are queued but not mailed while QHOOK_SMTP_URL is empty")
    return found


def _date_timing(
    ctx: AppContext,
    on_date: OnDate,
    flat: Mapping[str, Any],
    schedule: store.ScheduleRecord | None,
    now: datetime,
) -> tuple[dict[str, Any], str | None, datetime | None]:
    """When the on_date trigger fires for this result, and whether it already did: ({"due_at",
    "fired_at"}, None, due time), or ({}, why it never fires, None)."""
    value = flat.get(on_date.field)
    try:
        due = due_at(on_date, value, ctx.settings.timezone)
    except ValueError:
        due = None
    if due is None:
        shown = "empty" if value in (None, "") else f"{value!r}, giving no due time in the years 1 to 9999"
        return {}, f"never fires for this result: {on_date.field} is {shown}", None
    if schedule is None:
        timing = {"due_at": format_iso(due), "fired_at": None}
        if due <= now:  # a new workflow does not replay due times already past (docs/payload.md)
            passed = f"not scheduled: its due time {format_iso(due)} had passed when the workflow was saved"
            return timing, passed, due
        return timing, "not scheduled: saving the result or the workflow schedules it", due
    fired = format_iso(schedule.fired_at) if schedule.fired_at else None
    return {"due_at": format_iso(schedule.due_at), "fired_at": fired}, None, schedule.due_at


def run_manual(
    ctx: AppContext, workflow_id: int, result_ids: Sequence[int], *, actor: str
) -> list[dict[str, Any]]:
    """Fire a workflow with a manual trigger for each result whose filter is met; one ``manual``
    event per result, all in one transaction. Answers per result: fired, or why not."""
    if not result_ids or len(result_ids) > MAX_RUN_RESULTS:
        raise field_error("result_ids", f"a list of 1 to {MAX_RUN_RESULTS} result ids")
    outcomes: list[dict[str, Any]] = []
    wrote = False
    with ctx.db.transaction() as tx:
        workflow = _get(tx, workflow_id)
        current = set_store.get_set(tx, workflow.set_id)
        assert current is not None
        if not fanout.triggers_of(workflow, current.fields).manual:
            raise Conflict(f"workflow {workflow_id} has no manual trigger; turn on triggers.manual to run it")
        wanted = list(dict.fromkeys(result_ids))
        # Locked (in id order, as a batch write locks them): read unlocked, a result being changed
        # meanwhile was sent as it was before, after the change's own delivery, and an ordered
        # signal's receiver kept the older state.
        locked = result_store.get_results(tx, workflow.set_id, wanted, for_update=True)
        for result_id in wanted:
            result = locked.get(result_id)
            if result is None:
                outcomes.append(
                    {"result_id": result_id, "fired": False, "reason": "no such result in this set"}
                )
                continue
            now = utcnow()
            event, evaluations = fanout.fire_for_workflow(
                tx, ctx, workflow.id, current, result, action="manual", actor=actor, now=now
            )
            evaluation = evaluations[0] if evaluations else {"fired": False, "reason": "workflow not found"}
            wrote = wrote or bool(evaluation["fired"])
            outcomes.append(
                {
                    "result_id": result_id,
                    "fired": evaluation["fired"],
                    "reason": evaluation["reason"],
                    "event_id": event.uid,
                }
            )
        audit.record(tx, actor, "workflow.run", "workflow", workflow_id, {"result_ids": list(result_ids)})
    if wrote:
        ctx.wake()
    return outcomes
