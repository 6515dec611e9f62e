"""/api/v1/inspector/bins: make, read, script and delete request-inspector bins; list their captures."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from qhook.api.deps import BigId, Ctx, Editor, Viewer
from qhook.api.json_body import JsonBodyRoute
from qhook.context import AppContext
from qhook.domain import inspector as domain
from qhook.services import inspector
from qhook.store.inspector import BinRecord, CaptureRecord

router = APIRouter(route_class=JsonBodyRoute, prefix="/inspector", tags=["inspector"])

_RESPONSES_HELP = (
    "Scripted answers: a list like [{'status': 500, 'times': 3}, {'status': 200}] or one object like "
    "{'status': 429, 'headers': {'Retry-After': '30'}}; each step may set status, headers, body, "
    "delay_ms and times. Default: 200 {'ok': true}."
)


class BinIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    responses: Any = Field(None, description=_RESPONSES_HELP)
    ttl_days: Any = Field(None, description=f"Days until the bin expires (default {domain.DEFAULT_TTL_DAYS})")
    max_captures: Any = Field(
        None, description=f"Captures kept, oldest dropped (default {domain.DEFAULT_MAX_CAPTURES})"
    )
    secret: Any = Field(None, description="A whsec_ secret to check Standard Webhooks signatures with")


class ResponsesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    responses: Any = Field(description=_RESPONSES_HELP)


class BinCreated(BaseModel):
    id: str
    url: str
    expires_at: datetime


class BinOut(BinCreated):
    created_at: datetime
    responses: list[dict[str, Any]] | None
    max_captures: int
    has_secret: bool
    captures: int = Field(description="Captures kept now")
    capture_count: int = Field(description="Requests answered since the script was last set")


class CaptureOut(BaseModel):
    id: int
    at: datetime
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: str
    body_encoding: str = Field(description="utf-8, or base64 when the body is not UTF-8 text")
    source: str
    status: int = Field(description="The status the inspector answered with")
    signature: str = Field(description="valid, invalid, unsigned, or 'no secret' to check it with")

    @classmethod
    def of(cls, record: CaptureRecord) -> CaptureOut:
        body, encoding = domain.body_for_display(record.body)
        return cls(
            id=record.id,
            at=record.at,
            method=record.method,
            path=record.path,
            query=record.query,
            headers=record.headers,
            body=body,
            body_encoding=encoding,
            source=record.source,
            status=record.status,
            signature=record.signature,
        )


def _base_url(ctx: AppContext, request: Request) -> str:
    return ctx.settings.public_url or str(request.base_url)


def _bin_out(ctx: AppContext, request: Request, record: BinRecord, captures: int) -> BinOut:
    return BinOut(
        id=record.id,
        url=domain.bin_url(_base_url(ctx, request), record.id),
        expires_at=record.expires_at,
        created_at=record.created_at,
        responses=record.responses,
        max_captures=record.max_captures,
        has_secret=record.secret_enc is not None,
        captures=captures,
        capture_count=record.capture_count,
    )


@router.post("/bins", status_code=201)
async def create_bin(request: Request, ctx: Ctx, principal: Editor, body: BinIn | None = None) -> BinCreated:
    body = body or BinIn()
    record = await run_in_threadpool(
        lambda: inspector.create_bin(
            ctx,
            responses=body.responses,
            ttl_days=body.ttl_days,
            max_captures=body.max_captures,
            secret=body.secret,
            actor=principal.name,
        )
    )
    url = domain.bin_url(_base_url(ctx, request), record.id)
    return BinCreated(id=record.id, url=url, expires_at=record.expires_at)


@router.get("/bins")
async def list_bins(request: Request, ctx: Ctx, principal: Viewer) -> list[BinOut]:
    """The caller's own live bins, newest first."""
    found = await run_in_threadpool(inspector.bins_of, ctx, principal.name)
    # The oldest captures beyond max_captures are dropped: what is kept is the smaller number.
    return [_bin_out(ctx, request, r, min(r.capture_count, r.max_captures)) for r in found]


@router.get("/bins/{bin_id}")
async def get_bin(bin_id: str, request: Request, ctx: Ctx, principal: Viewer) -> BinOut:
    info = await run_in_threadpool(
        lambda: inspector.get_bin(ctx, bin_id, only_maker=inspector.only_maker(principal))
    )
    return _bin_out(ctx, request, info.bin, info.captures)


@router.get("/bins/{bin_id}/requests")
async def list_requests(
    bin_id: str,
    ctx: Ctx,
    principal: Viewer,
    limit: int = Query(100, ge=1, le=domain.MAX_MAX_CAPTURES),
    before_id: BigId | None = Query(None, description="Only captures older than this id (paging)"),
) -> list[CaptureOut]:
    records = await run_in_threadpool(
        lambda: inspector.list_captures(
            ctx, bin_id, limit=limit, before_id=before_id, only_maker=inspector.only_maker(principal)
        )
    )
    return [CaptureOut.of(r) for r in records]


@router.patch("/bins/{bin_id}")
async def set_responses(
    bin_id: str, body: ResponsesIn, request: Request, ctx: Ctx, principal: Editor
) -> BinOut:
    record = await run_in_threadpool(
        lambda: inspector.set_responses(
            ctx,
            bin_id,
            body.responses,
            actor=principal.name,
            any_bin=inspector.may_steer_any(principal),
            only_maker=inspector.only_maker(principal),
        )
    )
    info = await run_in_threadpool(inspector.get_bin, ctx, record.id)
    return _bin_out(ctx, request, info.bin, info.captures)


@router.delete("/bins/{bin_id}", status_code=204)
async def delete_bin(bin_id: str, ctx: Ctx, principal: Editor) -> Response:
    await run_in_threadpool(
        lambda: inspector.delete_bin(
            ctx,
            bin_id,
            actor=principal.name,
            any_bin=inspector.may_steer_any(principal),
            only_maker=inspector.only_maker(principal),
        )
    )
    return Response(status_code=204)
