"""POST /api/v1/workflows/{id}/signals/{signal_id}/test: send one signed sample now, logged as a test."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from qhook.api.deps import BigId, BodyId, Ctx, Editor, Id
from qhook.api.json_body import JsonBodyRoute
from qhook.api.v1.sets import ensure_set_access
from qhook.services import send_test, workflows

router = APIRouter(route_class=JsonBodyRoute, tags=["workflows"])


class TestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    result_id: BodyId | None = Field(
        None, description="Send this result of the workflow's set; a sample built from its fields when absent"
    )


class AttemptOut(BaseModel):
    status_code: int | None
    response_headers: dict[str, str]
    response_body: str
    duration_ms: int | None
    error_kind: str | None
    error: str | None
    hint: str | None


class TestOut(BaseModel):
    delivery_id: BigId = Field(description="The test delivery in the Integration Hub (is_test true)")
    webhook_id: str
    attempt: AttemptOut


@router.post("/workflows/{workflow_id}/signals/{signal_id}/test")
async def send_signal_test(
    workflow_id: Id, signal_id: Id, ctx: Ctx, principal: Editor, body: TestIn | None = None
) -> TestOut:
    """Send a sample body (or a chosen result), signed and authenticated as a real delivery, now."""
    workflow = workflows.get_workflow(ctx.db, workflow_id)
    ensure_set_access(principal, workflow.set_id, write=True)
    answer: dict[str, Any] = await send_test.send_test(
        ctx, workflow_id, signal_id, result_id=body.result_id if body else None, actor=principal.name
    )
    return TestOut.model_validate(answer)
