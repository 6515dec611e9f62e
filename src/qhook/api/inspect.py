"""/inspect/{id}: the receiving side of the request inspector; any method, any sub-path, no API key.

It only records and answers with the bin's configured response, so knowing a bin's id lets
someone add captures but never read them.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from qhook.api.deps import Ctx
from qhook.api.json_body import JsonBodyRoute
from qhook.clock import utcnow
from qhook.domain import inspector as domain
from qhook.services import inspector

router = APIRouter(route_class=JsonBodyRoute, include_in_schema=False)

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@router.api_route("/inspect/{bin_id}", methods=_METHODS)
async def capture_root(bin_id: str, request: Request, ctx: Ctx) -> Response:
    return await _capture(bin_id, "/", request, ctx)


@router.api_route("/inspect/{bin_id}/{path:path}", methods=_METHODS)
async def capture_path(bin_id: str, path: str, request: Request, ctx: Ctx) -> Response:
    return await _capture(bin_id, "/" + path, request, ctx)


async def _capture(bin_id: str, path: str, request: Request, ctx: Ctx) -> Response:
    body = await request.body()  # BodyLimit refuses bodies over QHOOK_MAX_BODY_BYTES with 413
    now = utcnow()
    headers = domain.capture_headers(request.scope["headers"])
    source = request.client.host if request.client else ""
    answer = await run_in_threadpool(
        lambda: inspector.capture(
            ctx,
            bin_id,
            method=request.method,
            path=path,
            query=request.url.query,
            headers=headers,
            body=body,
            source=source,
            now=now,
        )
    )
    if answer.delay_ms:
        await asyncio.sleep(answer.delay_ms / 1000)
    response = Response(content=answer.body, status_code=answer.status)
    for name, value in domain.served_headers(answer.headers):
        response.headers.append(name, value)
    return response
