"""/api/v1/stats: deliveries per hour by status and attempt latency, for the Hub's charts."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from qhook.api.deps import Ctx, Viewer
from qhook.api.json_body import JsonBodyRoute
from qhook.services import hub

router = APIRouter(route_class=JsonBodyRoute, tags=["integration hub"])


class HourOut(BaseModel):
    hour: datetime = Field(description="Start of the UTC hour")
    deliveries: dict[str, int] = Field(description="Deliveries created in the hour, by current status")
    attempts: int
    attempts_succeeded: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class StatsOut(BaseModel):
    since: datetime
    until: datetime
    hours: list[HourOut]


@router.get("/stats")
def get_stats(ctx: Ctx, principal: Viewer, since: datetime | None = None) -> StatsOut:
    """From ``since`` (default 24 hours ago, at most 31 days) to now, one entry per hour; a user
    limited to some sets sees their deliveries only."""
    found = hub.stats(ctx, since, set_ids=principal.set_ids)
    return StatsOut(
        since=found.since,
        until=found.until,
        hours=[
            HourOut(
                hour=h.hour,
                deliveries=h.deliveries,
                attempts=h.latency.attempts,
                attempts_succeeded=h.latency.succeeded,
                p50_ms=h.latency.p50_ms,
                p95_ms=h.latency.p95_ms,
                p99_ms=h.latency.p99_ms,
            )
            for h in found.hours
        ],
    )
