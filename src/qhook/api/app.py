"""The ASGI application: native API, compat API, UI, health checks, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qhook import __version__
from qhook.api import docs, errors
from qhook.api.deps import refuse_nul
from qhook.api.json_body import JsonBodyRoute
from qhook.api.rate_headers import RateHeaders
from qhook.api.v1 import routers as v1_routers
from qhook.context import AppContext
from qhook.errors import StoreError
from qhook.store import migrate


class BodyLimit:
    """413 for request bodies over the limit, by Content-Length or by counting a streamed body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._too_large(scope, receive, send)
        except BaseExceptionGroup as group:
            # @app.middleware("http") reads the body in a task group, which wraps our signal.
            if group.subgroup(_TooLarge) is None:
                raise
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"Request body too large: the limit is {self.max_bytes} bytes (QHOOK_MAX_BODY_BYTES)"
        await JSONResponse({"error": message}, status_code=413)(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(
    ctx: AppContext, *, lifespan_hooks: list[Callable[[FastAPI], Awaitable[None]]] | None = None
) -> FastAPI:
    """Build the app around an opened context; ``serve`` adds the worker and scheduler via hooks."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for hook in lifespan_hooks or []:
            await hook(app)
        yield
        for stop in getattr(app.state, "on_stop", []):
            await stop()

    app = FastAPI(
        title="qhook",
        version=__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # served by api/docs.py, without a CDN
        redoc_url=None,
        lifespan=lifespan,
        dependencies=[Depends(refuse_nul)],
    )
    app.router.route_class = JsonBodyRoute  # the app's own routes, like every router's
    app.state.ctx = ctx
    migrate.head_revision()  # the schema this code expects, read once (see /readyz)
    app.state.on_stop = []
    errors.install(app)
    docs.install(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        try:
            await run_in_threadpool(ctx.db.ping)
            schema, revision = await run_in_threadpool(migrate.schema_state, ctx.db)
        except StoreError as exc:  # the operator's probe: say why (the driver's first line)
            return JSONResponse({"status": "unavailable", "error": exc.for_operators}, status_code=503)
        except Exception as exc:  # any failure means "not ready"; say which
            return JSONResponse({"status": "unavailable", "error": type(exc).__name__}, status_code=503)
        if schema == "behind":
            return JSONResponse(
                {"status": "unavailable", "error": "migrations pending: run qhook migrate"}, 503
            )
        trouble = _worker_trouble(app)
        if trouble is not None:
            return JSONResponse({"status": "unavailable", "error": trouble}, status_code=503)
        if schema == "ahead":  # a newer qhook migrated it (its migrations add): this one still works
            return JSONResponse({"status": "ready", "schema": f"newer than this qhook ({revision})"})
        return JSONResponse({"status": "ready"})

    for router in v1_routers.ALL:
        app.include_router(router, prefix="/api/v1")
    _include_optional(app)
    app.add_middleware(BodyLimit, max_bytes=ctx.settings.max_body_bytes)
    app.add_middleware(RateHeaders, ctx=ctx)  # outermost: the 413 above gets its headers too
    return app


UNREADY_AFTER_CRASH_S = 60.0  # /readyz answers 503 this long after serve's worker stopped by an error


def _worker_trouble(app: FastAPI) -> str | None:
    """Why /readyz says "not ready" for ``qhook serve``'s own worker (None: it runs, or there is
    none); ``app.state.worker_crash`` is (loop time, why), set by the worker's supervisor."""
    crash = getattr(app.state, "worker_crash", None)
    if crash is None or asyncio.get_running_loop().time() - crash[0] > UNREADY_AFTER_CRASH_S:
        return None
    return f"the delivery worker stopped ({crash[1]}); it is started again"


def _include_optional(app: FastAPI) -> None:
    """Routers outside /api/v1 (compat API, inspector, UI, metrics) register in their own modules."""
    from qhook.api import extra_routers

    for router in extra_routers.ALL:
        app.include_router(router)
