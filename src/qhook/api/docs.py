"""The interactive API docs (Swagger UI), served by qhook itself.

FastAPI's default page loads Swagger UI from a CDN: where the plant network has no internet the
page stayed blank, and wherever it has, the page ran whatever the CDN served, on qhook's own
origin (where a signed-in UI session lives). The files are the same Swagger UI 5 that page
loads, packaged by ``fastapi-offline`` (only its files are used); the page's one inline script
is allowed by its hash, and nothing comes from elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from qhook.errors import NotFound

DOCS_URL = "/api/v1/docs"
ASSETS_URL = f"{DOCS_URL}/assets"
ASSETS = {  # a fixed list: no path from the URL reaches the file system
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
FILES = Path(fastapi_offline.__file__).parent / "static"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


def install(app: FastAPI) -> None:
    """The docs page and its files (the app is made with ``docs_url=None``)."""

    @app.get(DOCS_URL, include_in_schema=False)
    def docs_page() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url or "/api/v1/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        )
        page.headers["Content-Security-Policy"] = policy(bytes(page.body))
        page.headers["X-Content-Type-Options"] = "nosniff"
        return page

    @app.get(f"{ASSETS_URL}/{{name}}", include_in_schema=False)
    def docs_asset(name: str) -> Response:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFound(f"No docs file {name!r}")
        response = FileResponse(FILES / name, media_type=media_type)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def policy(page: bytes) -> str:
    """Scripts from qhook and the page's own inline ones (by hash); Swagger UI styles inline."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(page)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    )
