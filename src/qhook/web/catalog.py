"""UI pages for what the Hub points at: workflows (read-only, no secrets), sets, results and their
event trail ("why did it fire, or not")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from qhook.api.deps import Ctx, Id
from qhook.api.json_body import JsonBodyRoute
from qhook.domain import credentials
from qhook.domain.access import Principal
from qhook.domain.fields import flat_result
from qhook.errors import Forbidden, NotFound, ValidationFailed
from qhook.services import auth_profiles, hub, results, workflows
from qhook.services import sets as set_service
from qhook.store.workflows import WorkflowRecord
from qhook.web import present
from qhook.web.pages import PageUser, render

router = APIRouter(route_class=JsonBodyRoute, include_in_schema=False)

RESULTS_SHOWN = 50
COLUMNS_SHOWN = 8
# Signal settings shown in their own place (or never), the rest as a JSON block.
SHOWN_APART = frozenset({"id", "type", "url", "secret_set", "paused_reason", "headers", "secret"})


def _allowed(principal: Principal, set_id: Id) -> None:
    if not principal.can_use_set(set_id):
        raise Forbidden("No read permission for this set")


def _allowed_ids(principal: Principal) -> list[int] | None:
    return sorted(principal.set_ids) if principal.set_ids is not None else None


def _signal_view(signal: dict[str, Any]) -> dict[str, Any]:
    """A signal as the page shows it: header values that carry credentials redacted."""
    settings = {k: v for k, v in signal.items() if k not in SHOWN_APART}
    return {
        "id": signal["id"],
        "type": signal["type"],
        "url": signal.get("url"),
        "secret_set": signal.get("secret_set"),
        "paused_reason": signal.get("paused_reason"),
        "headers": credentials.redacted(signal.get("headers") or {}),
        "settings": settings,
    }


@router.get("/ui/workflows")
def workflows_page(request: Request, ctx: Ctx, me: PageUser) -> Response:
    found = workflows.list_workflows(ctx.db, set_ids=_allowed_ids(me))
    known_sets = {s.id: s.name for s in set_service.list_sets(ctx.db, _allowed_ids(me))}
    rows = [(w, present.describe_triggers(w.triggers)) for w in found]
    misfits = workflows.misfits(ctx.db, found)
    return render(request, "workflows.html", rows=rows, known_sets=known_sets, misfits=misfits)


def _workflow_for(ctx: Ctx, me: Principal, workflow_id: Id) -> WorkflowRecord:
    workflow = workflows.get_workflow(ctx.db, workflow_id)
    _allowed(me, workflow.set_id)
    return workflow


@router.get("/ui/workflows/{workflow_id}")
def workflow_page(workflow_id: Id, request: Request, ctx: Ctx, me: PageUser) -> Response:
    workflow = _workflow_for(ctx, me, workflow_id)
    doc = workflows.as_document(workflow)
    current = set_service.get_set(ctx.db, workflow.set_id)
    return render(
        request,
        "workflow.html",
        w=workflow,
        set_name=current.name,
        triggers=present.describe_triggers(workflow.triggers),
        signals=[_signal_view(s) for s in doc["signals"]],
        profile_names=auth_profiles.profile_names(ctx),
        misfit=workflows.misfits(ctx.db, [workflow]).get(workflow.id),
        never_met=workflows.never_met(ctx.db, workflow),
    )


@router.get("/ui/sets")
def sets_page(request: Request, ctx: Ctx, me: PageUser) -> Response:
    found = set_service.list_sets(ctx.db, _allowed_ids(me))
    return render(request, "sets.html", sets=found)


@router.get("/ui/sets/{set_id}")
def set_page(
    set_id: Id,
    request: Request,
    ctx: Ctx,
    me: PageUser,
    offset: str = "",
    field: str = "",
    value: str = "",
) -> Response:
    """The set's results newest first, a page at a time, optionally those whose ``field`` has
    ``value`` (a batch number): "why did result X not fire" starts from finding result X."""
    _allowed(me, set_id)
    problems: list[str] = []
    start = present.parse_offset(offset, problems)
    wanted = {field: value.strip()} if field and value.strip() else None
    try:
        current, page = results.list_results(
            ctx.db, set_id, filter_values=wanted, limit=RESULTS_SHOWN + 1, offset=start, sort=[("id", True)]
        )
    except ValidationFailed as exc:
        problems.append(exc.message)
        wanted = None
        current, page = results.list_results(ctx.db, set_id, limit=RESULTS_SHOWN + 1, sort=[("id", True)])
        start = 0
    fields = [f for f in sorted(current.fields, key=lambda f: f.position) if f.active]
    shown = fields[:COLUMNS_SHOWN]
    rows = [flat_result(r.id, r.date, r.values, current.fields) for r in page[:RESULTS_SHOWN]]
    flows = workflows.list_workflows(ctx.db, set_id=set_id)
    search = {"field": field, "value": value} if wanted else {}
    return render(
        request,
        "set.html",
        s=current,
        fields=fields,
        columns=shown,
        rows=rows,
        flows=flows,
        limit=RESULTS_SHOWN,
        problems=problems,
        search=search,
        chosen_field=field,
        searched_value=value,
        newer=max(start - RESULTS_SHOWN, 0) if start else None,
        older=start + RESULTS_SHOWN if len(page) > RESULTS_SHOWN else None,
        start=start,
    )


@router.get("/ui/sets/{set_id}/results/{result_id}")
def result_page(set_id: Id, result_id: Id, request: Request, ctx: Ctx, me: PageUser) -> Response:
    _allowed(me, set_id)
    current = set_service.get_set(ctx.db, set_id)
    flat = None
    try:
        _, record = results.get_result(ctx.db, set_id, result_id)
        flat = flat_result(record.id, record.date, record.values, current.fields)
    except NotFound:
        record = None
    events = results.list_events(ctx.db, result_id=result_id, set_id=set_id, limit=100)
    if record is None and not events:
        raise NotFound(f"No result {result_id} in set {set_id}")
    flows = workflows.list_workflows(ctx.db, set_id=set_id)
    flow_names = {w.id: w.name for w in flows}
    # Workflows someone may start by hand for this result (after fixing why it did not fire).
    manual = [w for w in flows if w.active and w.triggers.get("manual")] if record is not None else []
    sent, _ = hub.list_deliveries(
        ctx, hub.Filters(set_id=set_id, result_id=result_id), limit=20, set_ids=me.set_ids
    )
    return render(
        request,
        "result.html",
        s=current,
        result_id=result_id,
        record=record,
        flat=flat,
        labels={f.name: f.label for f in current.fields},
        events=events,
        flow_names=flow_names,
        deliveries=sent,
        manual=manual,
        can_write=me.has_role("editor") and me.can_use_set(set_id),
    )
