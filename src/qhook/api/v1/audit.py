"""/api/v1/audit: who changed what and when (admin; secrets are never written there)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from qhook.api.deps import Ctx, FullAdmin
from qhook.api.json_body import JsonBodyRoute
from qhook.api.v1.pages import Page
from qhook.domain import ids
from qhook.errors import field_error
from qhook.services import audit

router = APIRouter(route_class=JsonBodyRoute, tags=["audit"])
MAX_LIMIT = 500


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str | None
    details: Any


class AuditPage(Page[AuditOut]):
    pass


@router.get("/audit")
def list_audit(
    ctx: Ctx,
    _: FullAdmin,
    target_type: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> AuditPage:
    """Newest first."""
    if not 1 <= limit <= MAX_LIMIT:
        raise field_error("limit", f"between 1 and {MAX_LIMIT}")
    rows = audit.list_entries(
        ctx.db, limit=limit + 1, before_id=ids.read_cursor(cursor), target_type=target_type
    )
    page, next_cursor = ids.cut_page(rows, limit)
    return AuditPage(
        items=[
            AuditOut(
                id=r.id,
                at=r.at,
                actor=r.actor,
                action=r.action,
                target_type=r.target_type,
                target_id=r.target_id,
                details=r.details,
            )
            for r in page
        ],
        next_cursor=next_cursor,
    )
