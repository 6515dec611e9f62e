"""/api/v1/workflows: triggers, filter and signals of a set; secrets, preview and manual runs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field

from qhook.api.deps import Admin, BodyId, Ctx, Editor, Id, Viewer
from qhook.api.json_body import JsonBodyRoute
from qhook.api.v1.sets import ensure_set_access
from qhook.domain.access import Principal
from qhook.domain.ids import is_id
from qhook.domain.workflows import transfer_set_ids
from qhook.errors import Forbidden
from qhook.services import workflows
from qhook.store.workflows import WorkflowRecord

router = APIRouter(route_class=JsonBodyRoute, tags=["workflows"])

EXAMPLE = {
    "name": "Released batches to ERP",
    "set_id": 1,
    "active": True,
    "triggers": {"entry": True, "modification": {"fields": ["status_"]}, "manual": True},
    "filter": {"all": [{"field": "status_", "op": "eq", "value": "released"}]},
    "signals": [
        {
            "type": "webhook",
            "url": "https://erp.example.com/api/batches",
            "subject": "Batch {{ batchnumber_ }} released",
            "message": "Released by {{ actor }}",
        }
    ],
}
WorkflowBody = Annotated[dict[str, Any], Body(openapi_examples={"webhook": {"value": EXAMPLE}})]


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    result_id: BodyId
    action: str = Field("modified", description="new, modified, deleted, date or manual")
    values: dict[str, Any] | None = Field(
        None,
        description='With "modified": a change to try, {"status_": "released"}; the result is '
        "previewed as it would be after it (nothing is stored). Without it, the changes of the "
        "result's latest modification.",
    )


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    result_ids: list[BodyId] = Field(min_length=1, max_length=workflows.MAX_RUN_RESULTS)


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    secret: str | None = Field(None, description="A whsec_ secret to use; generated when absent")


class SecretOut(BaseModel):
    signal_id: Id
    secret: str
    previous_valid_until: datetime | None = None


def _visible(principal: Principal, workflow: WorkflowRecord) -> WorkflowRecord:
    ensure_set_access(principal, workflow.set_id)
    return workflow


def _with_secrets(workflow: WorkflowRecord, plain: dict[int, str]) -> dict[str, Any]:
    doc = workflows.as_document(workflow)
    for signal in doc["signals"]:
        if signal["id"] in plain:
            signal["secret"] = plain[signal["id"]]  # shown in this response only
    return doc


@router.post("/workflows", status_code=201)
def create_workflow(body: WorkflowBody, ctx: Ctx, principal: Admin) -> dict[str, Any]:
    """Create a workflow; the response holds each new webhook signal's signing secret, once."""
    set_id = body.get("set_id")
    if isinstance(set_id, int):
        ensure_set_access(principal, set_id, write=True)
    _may_write_targets(principal, body)
    workflow, plain = workflows.create_workflow(ctx, body, actor=principal.name)
    return _with_secrets(workflow, plain)


def _may_write_targets(principal: Principal, body: Mapping[str, Any]) -> None:
    """A transfer signal writes results into its set (and fires that set's workflows): an admin
    limited to some sets may only name sets they may write."""
    named = transfer_set_ids(body)  # well-formed ids only: others are refused by the signal's check
    for index, signal in enumerate(body.get("signals") or []):
        target = signal.get("set_id") if isinstance(signal, dict) else None
        if is_id(target) and target in named and not principal.can_use_set(target):
            where = f"signals[{index}].set_id"
            expected = f"a set you may write (set {target} is outside your sets)"
            raise Forbidden(f"{where}: {expected}", details=[{"field": where, "error": expected}])


@router.get("/workflows")
def list_workflows(ctx: Ctx, principal: Viewer, set_id: Id | None = None) -> list[dict[str, Any]]:
    set_ids = sorted(principal.set_ids) if principal.set_ids is not None else None
    found = workflows.list_workflows(ctx.db, set_id=set_id, set_ids=set_ids)
    return [workflows.as_document(w) for w in found]


@router.get("/workflows/{workflow_id}")
def get_workflow(workflow_id: Id, ctx: Ctx, principal: Viewer) -> dict[str, Any]:
    return workflows.as_document(_visible(principal, workflows.get_workflow(ctx.db, workflow_id)))


@router.patch("/workflows/{workflow_id}")
def update_workflow(workflow_id: Id, body: WorkflowBody, ctx: Ctx, principal: Admin) -> dict[str, Any]:
    """Change a workflow; signals with an ``id`` are kept, new ones created, missing ones deactivated."""
    _visible(principal, workflows.get_workflow(ctx.db, workflow_id))
    _may_write_targets(principal, body)
    workflow, plain = workflows.update_workflow(ctx, workflow_id, body, actor=principal.name)
    return _with_secrets(workflow, plain)


@router.delete("/workflows/{workflow_id}", status_code=204)
def delete_workflow(workflow_id: Id, ctx: Ctx, principal: Admin) -> None:
    _visible(principal, workflows.get_workflow(ctx.db, workflow_id))
    workflows.delete_workflow(ctx, workflow_id, actor=principal.name)


@router.post("/workflows/{workflow_id}/signals/{signal_id}/rotate-secret")
def rotate_secret(
    workflow_id: Id, signal_id: Id, ctx: Ctx, principal: Admin, body: RotateIn | None = None
) -> SecretOut:
    """A new signing secret, shown in this answer only (no route reads a secret back, design.md
    invariant 6); the previous one keeps signing alongside it for 24 hours."""
    _visible(principal, workflows.get_workflow(ctx.db, workflow_id))
    secret, until = workflows.rotate_secret(
        ctx, workflow_id, signal_id, actor=principal.name, secret=body.secret if body else None
    )
    return SecretOut(signal_id=signal_id, secret=secret, previous_valid_until=until)


@router.post("/workflows/{workflow_id}/signals/{signal_id}/resume")
def resume_signal(workflow_id: Id, signal_id: Id, ctx: Ctx, principal: Admin) -> dict[str, Any]:
    """Resume a signal paused because its receiver answered 410 Gone; its waiting deliveries go out."""
    _visible(principal, workflows.get_workflow(ctx.db, workflow_id))
    reason = workflows.resume_signal(ctx, workflow_id, signal_id, actor=principal.name)
    return {"signal_id": signal_id, "resumed": True, "was_paused_because": reason}


@router.post("/workflows/{workflow_id}/preview")
def preview(workflow_id: Id, body: PreviewIn, ctx: Ctx, principal: Viewer) -> dict[str, Any]:
    """Would it fire for this result and action, why, and the exact bodies; nothing is sent."""
    _visible(principal, workflows.get_workflow(ctx.db, workflow_id))
    return workflows.preview(
        ctx, workflow_id, result_id=body.result_id, action=body.action, values=body.values
    )


@router.post("/workflows/{workflow_id}/run")
def run(workflow_id: Id, body: RunIn, ctx: Ctx, principal: Editor) -> dict[str, Any]:
    """Fire a workflow with a manual trigger for these results; per result: fired or why not."""
    workflow = _visible(principal, workflows.get_workflow(ctx.db, workflow_id))
    ensure_set_access(principal, workflow.set_id, write=True)
    outcomes = workflows.run_manual(ctx, workflow_id, body.result_ids, actor=principal.name)
    return {"workflow_id": workflow_id, "results": outcomes}
