"""/api/v1/events: the audit trail of result changes, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from qhook.api.deps import Ctx, Id, Viewer
from qhook.api.json_body import JsonBodyRoute
from qhook.api.v1.pages import Page
from qhook.api.v1.sets import ensure_set_access
from qhook.domain.ids import cut_page, read_cursor
from qhook.services import results
from qhook.store.events import EventRecord

router = APIRouter(route_class=JsonBodyRoute, tags=["events"])


class EventOut(BaseModel):
    id: int
    uid: str
    set_id: Id
    result_id: Id | None
    action: str = Field(description="new, modified, deleted, date or manual")
    actor: str
    occurred_at: datetime
    before: dict[str, Any] | None = Field(description="The flat result as it was (null for new)")
    after: dict[str, Any] | None = Field(description="The flat result as it is (null for deleted)")
    changes: dict[str, Any] = Field(description='{"field": {"old": .., "new": ..}}')
    evaluations: list[dict[str, Any]] = Field(description="What each workflow decided")
    chain: dict[str, Any] | None
    result_version: int | None = Field(
        description="The version of the result the event shows (a deletion: one more than its last); "
        "null for events made before qhook kept it"
    )
    due_at: datetime | None = Field(
        description="For a date event: the due time that came due; null otherwise"
    )

    @classmethod
    def of(cls, event: EventRecord) -> EventOut:
        return cls(
            id=event.id,
            uid=event.uid,
            set_id=event.set_id,
            result_id=event.result_id,
            action=event.action,
            actor=event.actor,
            occurred_at=event.occurred_at,
            before=dict(event.before) if event.before is not None else None,
            after=dict(event.after) if event.after is not None else None,
            changes={k: dict(v) for k, v in event.changes.items()},
            evaluations=[dict(e) for e in event.evaluations],
            chain=dict(event.chain) if event.chain is not None else None,
            result_version=event.result_version,
            due_at=event.due_at,
        )


class EventPage(Page[EventOut]):
    pass


@router.get("/events")
def list_events(
    ctx: Ctx,
    principal: Viewer,
    result_id: Id | None = None,
    set_id: Id | None = None,
    uid: Annotated[str | None, Query(description='The id receivers get, "evt_..."')] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> EventPage:
    if set_id is not None:
        ensure_set_access(principal, set_id)
    allowed = sorted(principal.set_ids) if principal.set_ids is not None else None
    page = results.list_events(
        ctx.db,
        result_id=result_id,
        set_id=set_id,
        set_ids=allowed,
        before_id=read_cursor(cursor, "a next_cursor value returned by this API"),
        limit=limit + 1,
        uid=uid.strip() if uid else None,
    )
    page, next_cursor = cut_page(page, limit)
    return EventPage(items=[EventOut.of(e) for e in page], next_cursor=next_cursor)
