"""/api/v1/sets/{id}/results: results of a set (editors write, viewers read), with If-Match versions."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from qhook.api.deps import Ctx, Editor, Id, Viewer
from qhook.api.json_body import JsonBodyRoute
from qhook.api.v1.pages import Page
from qhook.api.v1.sets import ensure_set_access
from qhook.domain import json_text
from qhook.domain.fields import format_iso, native_values
from qhook.domain.ids import MAX_ID, cut_page, read_cursor
from qhook.errors import field_error
from qhook.services import results
from qhook.store.results import ResultRecord
from qhook.store.sets import SetRecord

router = APIRouter(route_class=JsonBodyRoute, tags=["results"])


class ResultOut(BaseModel):
    id: int
    set_id: Id
    date: str = Field(description="UTC, ISO 8601")
    values: dict[str, Any] = Field(description="Field name -> value; list fields as their label")
    version: int
    created_at: datetime
    updated_at: datetime
    created_by: str
    updated_by: str

    @classmethod
    def of(cls, result: ResultRecord, current: SetRecord) -> ResultOut:
        return cls(
            id=result.id,
            set_id=result.set_id,
            date=format_iso(result.date),
            values=native_values(result.values, current.fields),
            version=result.version,
            created_at=result.created_at,
            updated_at=result.updated_at,
            created_by=result.created_by,
            updated_by=result.updated_by,
        )


class ResultPage(Page[ResultOut]):
    pass


class ResultIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    values: dict[str, Any] = Field(default_factory=dict, description="Field name -> value")
    date: str | None = Field(None, description="ISO 8601; default now")


class ResultPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    values: dict[str, Any] = Field(default_factory=dict, description="Merged in; null clears a value")
    date: str | None = None


def parse_if_match(header: str | None) -> int | None:
    """If-Match: 3, "3" or W/"3" -> 3; "*" (any version) -> no check."""
    if header is None or not header.strip() or header.strip() == "*":
        return None
    text = header.strip().removeprefix("W/").strip().strip('"')
    if not (text.isascii() and text.isdigit()):
        raise field_error("If-Match", 'the version you read, such as 3 or "3"')
    return int(text)


def parse_cursor(cursor: str | None) -> int | None:
    return read_cursor(cursor, "a next_cursor value returned by this API", maximum=MAX_ID)


def _filter(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        parsed = json_text.loads(raw)
    except json.JSONDecodeError as exc:
        raise field_error("filter", 'a JSON object such as {"status_": "released"}') from exc
    if not isinstance(parsed, dict):
        raise field_error("filter", 'a JSON object such as {"status_": "released"}')
    return parsed


def _etag(response: Response, result: ResultRecord) -> None:
    response.headers["ETag"] = f'"{result.version}"'


# The writes are async and hand the service to the thread pool themselves: FastAPI validates a
# sync endpoint's answer in the pool too, one more thread hop per request (bench/latency).
@router.post("/sets/{set_id}/results", status_code=201)
async def create_result(
    set_id: Id, body: ResultIn, ctx: Ctx, principal: Editor, response: Response
) -> ResultOut:
    ensure_set_access(principal, set_id, write=True)
    current, created = await run_in_threadpool(
        results.create_result, ctx, set_id=set_id, values=body.values, date=body.date, actor=principal.name
    )
    _etag(response, created)
    return ResultOut.of(created, current)


@router.get("/sets/{set_id}/results")
def list_results(
    set_id: Id,
    ctx: Ctx,
    principal: Viewer,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
    filter: Annotated[
        str | None,
        Query(description='JSON object: field -> value (or list of values); e.g. {"status_": "released"}'),
    ] = None,
) -> ResultPage:
    ensure_set_access(principal, set_id)
    current, page = results.list_results(
        ctx.db, set_id, filter_values=_filter(filter), after_id=parse_cursor(cursor), limit=limit + 1
    )
    page, next_cursor = cut_page(page, limit)
    return ResultPage(items=[ResultOut.of(r, current) for r in page], next_cursor=next_cursor)


@router.get("/sets/{set_id}/results/{result_id}")
def get_result(set_id: Id, result_id: Id, ctx: Ctx, principal: Viewer, response: Response) -> ResultOut:
    ensure_set_access(principal, set_id)
    current, found = results.get_result(ctx.db, set_id, result_id)
    _etag(response, found)
    return ResultOut.of(found, current)


@router.patch("/sets/{set_id}/results/{result_id}")
async def update_result(
    set_id: Id,
    result_id: Id,
    body: ResultPatch,
    ctx: Ctx,
    principal: Editor,
    response: Response,
    if_match: Annotated[str | None, Header(description="The version you read; 412 if it moved on")] = None,
) -> ResultOut:
    ensure_set_access(principal, set_id, write=True)
    current, updated = await run_in_threadpool(
        results.update_result,
        ctx,
        set_id=set_id,
        result_id=result_id,
        values=body.values,
        date=body.date,
        actor=principal.name,
        expected_version=parse_if_match(if_match),
    )
    _etag(response, updated)
    return ResultOut.of(updated, current)


@router.delete("/sets/{set_id}/results/{result_id}", status_code=204)
def delete_result(
    set_id: Id,
    result_id: Id,
    ctx: Ctx,
    principal: Editor,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    ensure_set_access(principal, set_id, write=True)
    results.delete_result(
        ctx,
        set_id=set_id,
        result_id=result_id,
        actor=principal.name,
        expected_version=parse_if_match(if_match),
    )
    return Response(status_code=204)
