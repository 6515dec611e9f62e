"""Errors become HTTP here, and only here: JSON for the APIs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from qhook.domain import json_text
from qhook.errors import QhookError, RateLimited, StoreError

logger = logging.getLogger("qhook.api")


def _field_path(location: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in location if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or ".".join(str(p) for p in location)


def _detail(error: Mapping[str, Any]) -> dict[str, str]:
    """One validation error as ``field``/``error``. A body that is no JSON at all names the body,
    what is wrong and where (FastAPI's own text is only "JSON decode error" at an offset)."""
    location = error.get("loc", ())
    if error.get("type") == "json_invalid":
        problem = (error.get("ctx") or {}).get("error", "malformed")
        refusal = json_text.refused(problem)
        if refusal is not None:
            return {"field": refusal[0], "error": refusal[1]}
        where = f" at character {location[-1]}" if len(location) > 1 else ""
        return {"field": "body", "error": f"valid JSON expected: {problem}{where}"}
    kind = error.get("type")
    if kind == "extra_forbidden":
        return {
            "field": _field_path(location),
            "error": "no such field here (/api/v1/docs lists the fields)",
        }
    if kind == "bool_type":
        return {"field": _field_path(location), "error": "true or false"}
    if kind == "model_attributes_type" and len(location) <= 1:
        # A body that is not a JSON object (a form, text/plain): "valid dictionary" named neither.
        return {"field": "body", "error": "a JSON object, sent as Content-Type: application/json"}
    return {"field": _field_path(location), "error": error.get("msg", "invalid")}


def is_compat_path(path: str) -> bool:
    """The AlisQI-compatible operations answer errors as a bare ``{"error": ...}``."""
    return path.startswith("/api/") and not path.startswith("/api/v1")


def is_ui_path(path: str) -> bool:
    """The server-rendered UI answers errors with a page (or a redirect to the login page)."""
    return path in ("/", "/ui") or path.startswith("/ui/")


async def ui_error(request: Request, status: int, message: str) -> Response:
    from qhook.web import pages  # the UI imports the API's dependencies; import it late

    await pages.remember_principal(request)  # a page of an unknown path keeps its menu bar
    return pages.error_page(request, status, message)


def rate_headers(request: Request) -> dict[str, str]:
    state = getattr(request.state, "rate_state", None)
    if state is None:
        return {}
    return {
        "X-RateLimit-Limit": str(state.limit),
        "X-RateLimit-Remaining": str(state.remaining),
        "X-RateLimit-Retry-After": str(state.retry_after_s),
    }


def error_response(request: Request, exc: QhookError) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.message}
    if exc.details and not is_compat_path(request.url.path):
        body["details"] = exc.details
    headers = rate_headers(request)
    if isinstance(exc, RateLimited):
        state = getattr(exc, "rate_state", None)
        if state is not None:
            request.state.rate_state = state
            headers = rate_headers(request)
        headers["Retry-After"] = str(exc.retry_after_s)
    return JSONResponse(body, status_code=exc.status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(QhookError)
    async def _qhook_error(request: Request, exc: QhookError) -> Response:
        if isinstance(exc, StoreError):  # the reason is for the log, not for the client
            logger.error(
                "request failed: %s",
                exc.for_operators,
                extra={"action": "request_error", "path": request.url.path},
            )
        elif exc.status >= 500:
            logger.error(
                "request failed", extra={"action": "request_error", "path": request.url.path}, exc_info=exc
            )
        if is_ui_path(request.url.path):
            return await ui_error(request, exc.status, exc.message)
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        details = [_detail(e) for e in exc.errors()]
        summary = "; ".join(f"{d['field']}: {d['error']}" for d in details[:5])
        if is_ui_path(request.url.path):
            if all(e["loc"][:1] == ("path",) for e in exc.errors()):
                # /ui/hub/abc: no such page, rather than a parser's words about integers.
                return await ui_error(request, 404, f"Not found: {request.url.path}")
            return await ui_error(request, 422, f"Invalid input: {summary}")
        return JSONResponse(
            {"error": f"Invalid input: {summary}", "details": details},
            status_code=422,
            headers=rate_headers(request),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"Not found: {request.url.path}"
        if is_ui_path(request.url.path):
            return await ui_error(request, exc.status_code, message)
        return JSONResponse(
            {"error": message},
            status_code=exc.status_code,
            headers={**(exc.headers or {}), **rate_headers(request)},
        )
