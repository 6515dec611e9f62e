"""/api/v1/deliveries: the Integration Hub's log, detail, redeliver, replay and cancel."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.concurrency import run_in_threadpool

from qhook.api.deps import BigId, BodyId, Ctx, Editor, Id, Viewer
from qhook.api.json_body import JsonBodyRoute
from qhook.api.v1.pages import Page
from qhook.domain import credentials
from qhook.services import hub
from qhook.store.hub import AttemptRecord, DeliveryRecord

router = APIRouter(route_class=JsonBodyRoute, tags=["integration hub"])


class DeliveryOut(BaseModel):
    id: int
    webhook_id: str
    status: str = Field(description="pending, retrying, held, succeeded, failed or cancelled")
    workflow_id: Id | None
    signal_id: Id | None
    set_id: Id | None
    result_id: Id | None
    event_id: BigId | None = Field(description="The internal event id")
    event_uid: str | None = Field(description='The event id receivers get ("evt_..."); filter with it')
    action: str
    url: str
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error_kind: str | None
    hint: str | None = Field(description="What a person can do about the last failure")
    created_at: datetime
    delivered_at: datetime | None
    is_test: bool = Field(False, description="A send test: sent once, never retried")

    @classmethod
    def of(cls, d: DeliveryRecord) -> DeliveryOut:
        return cls(
            id=d.id,
            webhook_id=d.webhook_id,
            status=d.status,
            workflow_id=d.workflow_id,
            signal_id=d.signal_id,
            set_id=d.set_id,
            result_id=d.result_id,
            event_id=d.event_id,
            event_uid=d.event_uid,
            action=d.action,
            url=credentials.shown_url(d.url),
            attempt_count=d.attempt_count,
            next_attempt_at=d.next_attempt_at,
            last_status_code=d.last_status_code,
            last_error_kind=d.last_error_kind,
            hint=d.hint,
            created_at=d.created_at,
            delivered_at=d.delivered_at,
            is_test=d.is_test,
        )


class DeliveryPage(Page[DeliveryOut]):
    pass


class AttemptOut(BaseModel):
    number: int
    trigger: str = Field(
        description="scheduled, manual (a redelivery), replay (a replay of many), test, or probe (it tested"
        " the endpoint's open circuit: a failed probe uses up none of the delivery's attempts)"
    )
    started_at: datetime
    duration_ms: int | None
    request_headers: dict[str, str] = Field(description="Secrets redacted")
    status_code: int | None
    response_headers: dict[str, str] | None
    response_body: str | None = Field(description="Truncated")
    error_kind: str | None
    error: str | None
    hint: str | None
    url: str = Field(
        description="Where it was sent (a delivery follows its signal's URL when that is changed)"
    )

    @classmethod
    def of(cls, a: AttemptRecord, delivery_url: str) -> AttemptOut:
        return cls(
            number=a.number,
            trigger=a.trigger,
            started_at=a.started_at,
            duration_ms=a.duration_ms,
            request_headers=a.request_headers,
            status_code=a.status_code,
            response_headers=a.response_headers,
            response_body=a.response_body,
            error_kind=a.error_kind,
            error=a.error,
            hint=a.hint,
            url=credentials.shown_url(a.url or delivery_url),
        )


class RequestOut(BaseModel):
    method: str = "POST"
    url: str
    headers: dict[str, str] = Field(description="As last sent, secrets redacted; empty before the first try")
    body: str = Field(description="Sent byte for byte on every attempt")


class DeliveryDetailOut(DeliveryOut):
    request: RequestOut
    attempts: list[AttemptOut]
    waiting: str | None = Field(
        None,
        description="Why a delivery not yet finished has not gone: a pause, an open circuit, the next try",
    )


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str | None = Field(
        None,
        description="failed, succeeded or cancelled, or several comma-separated ('failed,succeeded');"
        " default failed",
    )
    workflow_id: BodyId | None = None
    signal_id: BodyId | None = None
    set_id: BodyId | None = None
    result_id: BodyId | None = None
    action: str | None = Field(None, description="new, modified, deleted, date or manual")
    endpoint: str | None = Field(None, description="Origin, e.g. https://erp.example.com:443")
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = Field(
        None, description="Text in the body, as the Hub's search, or a webhook-id (msg_...)"
    )
    dry_run: StrictBool = Field(False, description="Count what would be queued; queue nothing")


class ReplayOut(BaseModel):
    queued: int
    matched: int | None = Field(None, description="With dry_run: how many a replay would queue now")


@router.get("/deliveries")
def list_deliveries(
    ctx: Ctx,
    principal: Viewer,
    status: str | None = None,
    workflow_id: Id | None = None,
    signal_id: Id | None = None,
    set_id: Id | None = None,
    result_id: Id | None = None,
    endpoint: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    q: str | None = None,
    event_id: str | None = None,
    event_uid: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> DeliveryPage:
    """Newest first: by id, or with ``since``/``until`` by creation time (then id), so a time
    window is one short index walk however many rows it holds. ``q`` finds text in the body (e.g.
    a batch number), or the delivery whose ``webhook-id`` it is (``msg_...``, as receivers log it);
    ``event_id`` (or ``event_uid``) takes the ``evt_...`` id receivers get, or the
    internal event id."""
    for name, given in (("event_uid", event_uid), ("event_id", event_id)):
        if given is not None:
            hub.check_event(given, name)  # a 422 naming the parameter given
    filters = hub.Filters(
        status=status,
        workflow_id=workflow_id,
        signal_id=signal_id,
        set_id=set_id,
        result_id=result_id,
        endpoint=endpoint,
        action=action,
        since=since,
        until=until,
        q=q,
        event=event_uid or event_id,
    )
    page, next_cursor = hub.list_deliveries(
        ctx, filters, limit=limit, cursor=cursor, set_ids=principal.set_ids
    )
    return DeliveryPage(items=[DeliveryOut.of(d) for d in page], next_cursor=next_cursor)


@router.post("/deliveries/replay", response_model_exclude_none=True)
async def replay(body: ReplayIn, ctx: Ctx, principal: Editor) -> ReplayOut:
    """Queue matching finished deliveries again; a delivery still queued by an earlier replay is not
    queued twice (once finished, it is sent again by the next replay). The filters
    are the Hub list's; ``dry_run`` answers how many would be queued."""
    filters = hub.Filters(
        status=body.status,
        workflow_id=body.workflow_id,
        signal_id=body.signal_id,
        set_id=body.set_id,
        result_id=body.result_id,
        action=body.action,
        endpoint=body.endpoint,
        since=body.since,
        until=body.until,
        q=body.q,
    )
    if body.dry_run:
        count = await run_in_threadpool(lambda: hub.count_replayable(ctx, filters, set_ids=principal.set_ids))
        return ReplayOut(queued=0, matched=count)
    queued = await run_in_threadpool(
        lambda: hub.replay(ctx, filters, actor=principal.name, set_ids=principal.set_ids)
    )
    if queued:
        ctx.wake()
    return ReplayOut(queued=queued)


@router.get("/deliveries/{delivery_id}")
def get_delivery(delivery_id: BigId, ctx: Ctx, principal: Viewer) -> DeliveryDetailOut:
    found = hub.delivery_detail(ctx, delivery_id, set_ids=principal.set_ids)
    d = found.delivery
    return DeliveryDetailOut(
        **DeliveryOut.of(d).model_dump(),
        request=RequestOut(url=credentials.shown_url(d.url), headers=found.request_headers, body=found.body),
        attempts=[AttemptOut.of(a, d.url) for a in found.attempts],
        waiting=found.waiting,
    )


@router.post("/deliveries/{delivery_id}/redeliver")
async def redeliver(delivery_id: BigId, ctx: Ctx, principal: Editor) -> DeliveryOut:
    """Send again now with the same body and webhook-id (failed, succeeded or retrying ones)."""
    done = await run_in_threadpool(
        lambda: hub.redeliver(ctx, delivery_id, actor=principal.name, set_ids=principal.set_ids)
    )
    ctx.wake()
    return DeliveryOut.of(done)


@router.post("/deliveries/{delivery_id}/cancel")
async def cancel(delivery_id: BigId, ctx: Ctx, principal: Editor) -> DeliveryOut:
    """Stop a pending, retrying or held delivery."""
    done = await run_in_threadpool(
        lambda: hub.cancel(ctx, delivery_id, actor=principal.name, set_ids=principal.set_ids)
    )
    return DeliveryOut.of(done)
