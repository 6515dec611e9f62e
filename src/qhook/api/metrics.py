"""``GET /metrics`` for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from qhook import metrics
from qhook.api.json_body import JsonBodyRoute

router = APIRouter(route_class=JsonBodyRoute, include_in_schema=False)


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    body = await run_in_threadpool(metrics.render, request.app.state.ctx)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
