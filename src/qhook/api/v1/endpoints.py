"""/api/v1/endpoints: health per origin, and the operator's pause and resume."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from qhook.api.deps import Admin, Ctx, Viewer
from qhook.services import hub
from qhook.store.hub import EndpointRecord
from qhook.store.hub_stats import Latency

router = APIRouter(tags=["integration hub"])


class WindowOut(BaseModel):
    attempts: int
    success_rate: float | None = Field(description="Share of 2xx attempts, 0..1; null without attempts")
    p50_ms: float | None
    p95_ms: float | None

    @classmethod
    def of(cls, latency: Latency) -> WindowOut:
        rate = latency.succeeded / latency.attempts if latency.attempts else None
        return cls(attempts=latency.attempts, success_rate=rate, p50_ms=latency.p50_ms, p95_ms=latency.p95_ms)


class EndpointOut(BaseModel):
    origin: str
    state: str = Field(description="ok, throttled, circuit_open or paused")
    paused: bool
    throttled_until: datetime | None
    circuit_open_since: datetime | None
    last_hour: WindowOut
    last_day: WindowOut
    queue_depth: int


class EndpointChanged(BaseModel):
    origin: str
    paused: bool

    @classmethod
    def of(cls, row: EndpointRecord) -> EndpointChanged:
        return cls(origin=row.origin, paused=row.paused)


@router.get("/endpoints")
def list_endpoints(ctx: Ctx, _: Viewer) -> list[EndpointOut]:
    return [
        EndpointOut(
            origin=s.origin,
            state=s.state,
            paused=s.paused,
            throttled_until=s.throttled_until,
            circuit_open_since=s.circuit_open_since,
            last_hour=WindowOut.of(s.last_hour),
            last_day=WindowOut.of(s.last_day),
            queue_depth=s.queue_depth,
        )
        for s in hub.endpoint_summaries(ctx)
    ]


# ``:path`` because the origin, URL-encoded or not, holds slashes once decoded.
@router.post("/endpoints/{origin:path}/pause")
async def pause(origin: str, ctx: Ctx, principal: Admin) -> EndpointChanged:
    """No new attempts to this origin until resumed (in-flight ones finish)."""
    row = await run_in_threadpool(
        lambda: hub.set_endpoint_paused(ctx, origin, paused=True, actor=principal.name)
    )
    return EndpointChanged.of(row)


@router.post("/endpoints/{origin:path}/resume")
async def resume(origin: str, ctx: Ctx, principal: Admin) -> EndpointChanged:
    row = await run_in_threadpool(
        lambda: hub.set_endpoint_paused(ctx, origin, paused=False, actor=principal.name)
    )
    ctx.wake()
    return EndpointChanged.of(row)
