"""/api/v1/endpoints: health per origin, and the operator's pause, resume and probe."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from qhook.api.deps import Admin, BodyInt, Ctx, Viewer
from qhook.api.json_body import JsonBodyRoute
from qhook.api.v1.pages import Page
from qhook.clock import utcnow
from qhook.services import hub
from qhook.store.hub import EndpointRecord
from qhook.store.hub_stats import Latency

router = APIRouter(route_class=JsonBodyRoute, tags=["integration hub"])


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
    rate_limit: str | None = Field(description="Per-host rate limit over the signals' own; null: none")
    max_in_flight: int | None = Field(description="Per-host concurrency cap; null: the signals' own")


class LogEntryOut(BaseModel):
    id: int
    at: datetime
    change: str = Field(
        description=(
            "circuit_open, circuit_closed, probe_requested, probe_failed, throttled, paused, resumed "
            "or limits"
        )
    )
    detail: str | None


class LogPage(Page[LogEntryOut]):
    pass


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate_limit: str | None = Field(None, description="e.g. '30/minute'; null: none for the host")
    max_in_flight: BodyInt | None = Field(None, description="1..100; null: the signals' own (default 10)")


class LimitsOut(BaseModel):
    origin: str
    rate_limit: str | None
    max_in_flight: int | None


class EndpointChanged(BaseModel):
    origin: str
    paused: bool
    throttled_until: datetime | None  # a receiver's Retry-After wait still running; Resume ends it

    @classmethod
    def of(cls, row: EndpointRecord) -> EndpointChanged:
        waiting = row.throttled_until is not None and row.throttled_until > utcnow()
        return cls(
            origin=row.origin, paused=row.paused, throttled_until=row.throttled_until if waiting else None
        )


@router.get("/endpoints")
def list_endpoints(ctx: Ctx, principal: Viewer) -> list[EndpointOut]:
    """Health per origin; a user limited to some sets sees only their deliveries' origins and numbers."""
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
            rate_limit=s.rate_limit,
            max_in_flight=s.max_in_flight,
        )
        for s in hub.endpoint_summaries(ctx, set_ids=principal.set_ids)
    ]


# ``:path`` because the origin, URL-encoded or not, holds slashes once decoded.
@router.post("/endpoints/{origin:path}/pause")
async def pause(origin: str, ctx: Ctx, principal: Admin) -> EndpointChanged:
    """No new attempts to this origin until resumed (in-flight ones finish). An admin limited to
    some sets may pause only origins their sets' deliveries go to (403 for others)."""
    row = await run_in_threadpool(
        lambda: hub.set_endpoint_paused(
            ctx, origin, paused=True, actor=principal.name, set_ids=principal.set_ids
        )
    )
    return EndpointChanged.of(row)


@router.post("/endpoints/{origin:path}/resume")
async def resume(origin: str, ctx: Ctx, principal: Admin) -> EndpointChanged:
    """Attempts to this origin go again, one step at a time: an operator's pause ends; on an
    endpoint no one paused, a receiver's Retry-After wait ends, and the retries scheduled within
    it go now (retries whose own backoff ends later keep their time; Redeliver sends one now)."""
    row = await run_in_threadpool(
        lambda: hub.set_endpoint_paused(
            ctx, origin, paused=False, actor=principal.name, set_ids=principal.set_ids
        )
    )
    return EndpointChanged.of(row)


@router.post("/endpoints/{origin:path}/probe")
async def probe(origin: str, ctx: Ctx, principal: Admin) -> EndpointChanged:
    """The receiver is fixed: probe its open circuit now instead of after the cool-off. One held
    delivery goes; when it succeeds the circuit closes and the held ones follow (409 unless the
    circuit is open)."""
    row = await run_in_threadpool(
        lambda: hub.probe_endpoint(ctx, origin, actor=principal.name, set_ids=principal.set_ids)
    )
    return EndpointChanged.of(row)


@router.put("/endpoints/{origin:path}/limits")
async def set_limits(origin: str, body: LimitsIn, ctx: Ctx, principal: Admin) -> LimitsOut:
    """Rate limit and concurrency cap for every delivery to this origin, whatever the signal says."""
    row = await run_in_threadpool(
        lambda: hub.set_endpoint_limits(
            ctx,
            origin,
            rate_limit=body.rate_limit,
            max_in_flight=body.max_in_flight,
            actor=principal.name,
            set_ids=principal.set_ids,
        )
    )
    ctx.wake()
    return LimitsOut(origin=row.origin, rate_limit=row.rate_limit, max_in_flight=row.max_in_flight)


@router.get("/endpoints/{origin:path}/log")
def endpoint_log(
    origin: str, ctx: Ctx, principal: Viewer, limit: int = 50, cursor: str | None = None
) -> LogPage:
    """The endpoint's history, newest first: circuit opened and closed, throttles, pauses, limits.
    A user limited to some sets gets an empty page for origins none of their deliveries go to."""
    rows, next_cursor = hub.endpoint_log(ctx, origin, limit=limit, cursor=cursor, set_ids=principal.set_ids)
    return LogPage(
        items=[LogEntryOut(id=r.id, at=r.at, change=r.change, detail=r.detail) for r in rows],
        next_cursor=next_cursor,
    )
