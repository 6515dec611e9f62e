"""Rendering UI pages: the Jinja2 environment, the logged-in person, error pages, security headers.

CSRF, as chosen here: every change the UI makes (redeliver, cancel, replay, pause, resume, send
test) is a ``fetch`` to the JSON API carrying the session's token in the ``X-Qhook-CSRF`` header;
``api.deps.check_csrf`` refuses a cookie-authenticated change without it. Other sites can neither
read the token (it sits in our pages only) nor send a custom header cross-origin without a CORS
preflight, which qhook never grants. The two plain form posts (login, logout) carry a token in a
hidden field, and the session cookie is SameSite=Lax on top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from qhook import __version__
from qhook.api.deps import SESSION_COOKIE, context_of
from qhook.domain import credentials
from qhook.domain.access import Principal
from qhook.errors import QhookError, Unauthorized
from qhook.services import users
from qhook.web import present

HERE = Path(__file__).parent
# Only our own files: no inline script, no CDN, no framing by other sites.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters.update(
    when=present.when,
    millis=present.millis,
    percent=present.percent,
    pretty_body=present.pretty_body,
    pretty_json=present.pretty_json,
    badge=present.badge_class,
    endpoint_state=present.endpoint_state,
    body_cut=present.body_cut,
    redact=credentials.redacted,
    shown_url=credentials.shown_url,
    urlquote=lambda text: quote(str(text), safe=""),
)
# For app.js, which redacts the live inspector's captures as the server does.
env.globals["credential_headers"] = ",".join(sorted(credentials.CREDENTIAL_HEADERS))
env.globals["credential_words"] = ",".join(sorted(credentials.CREDENTIAL_WORDS))


def secure_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"
    return response


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    principal: Principal | None = getattr(request.state, "ui_principal", None)
    html = env.get_template(template).render(
        request=request,
        me=principal,
        csrf=getattr(request.state, "ui_csrf", ""),
        version=__version__,
        can_edit=bool(principal and principal.has_role("editor")),
        can_admin=bool(principal and principal.has_role("admin")),
        **context,
    )
    response = HTMLResponse(html, status_code=status_code)
    secure_headers(response)
    return response


def login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/ui/login?next=" + quote(target, safe="")


def error_page(request: Request, status: int, message: str) -> Response:
    """401 sends people to the login page (and back afterwards); other errors get a page."""
    if status == 401:
        response: Response = RedirectResponse(login_url(request), status_code=303)
        if request.cookies.get(SESSION_COOKIE):
            response.delete_cookie(SESSION_COOKIE, path="/")
        return secure_headers(response)
    titles = {403: "Not allowed", 404: "Not found", 409: "Conflict", 422: "Invalid input"}
    title = titles.get(status, "Something went wrong" if status >= 500 else "Error")
    shown = message if status < 500 else "An internal error happened; the server log has the details."
    return render(request, "error.html", status_code=status, title=title, status=status, message=shown)


async def remember_principal(request: Request) -> None:
    """For an error page: the signed-in person, when the page's own check did not run (an unknown
    path, a malformed id), so the page shows the menu bar. Never raises."""
    if getattr(request.state, "ui_principal", None) is not None:
        return
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return
    try:
        principal = await run_in_threadpool(users.session_principal, context_of(request).db, token)
    except QhookError:
        return
    if principal is not None:
        request.state.ui_principal = principal
        request.state.ui_csrf = users.csrf_token(token)


async def page_principal(request: Request) -> Principal:
    """The person of the session cookie; the error handler turns the 401 into a login redirect."""
    token = request.cookies.get(SESSION_COOKIE)
    principal = None
    if token:
        principal = await run_in_threadpool(users.session_principal, context_of(request).db, token)
    if principal is None or token is None:
        raise Unauthorized("Log in to see this page")
    request.state.ui_principal = principal
    request.state.ui_csrf = users.csrf_token(token)
    return principal


# Reading any page needs the viewer role, as reading the API does; changes are the API's to check.
PageUser = Annotated[Principal, Depends(page_principal)]


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(users.SESSION_LIFETIME.total_seconds()),
        path="/",
        httponly=True,
        samesite="lax",
        secure=cookie_secure(request),
    )


def cookie_secure(request: Request) -> bool:
    """Secure cookies on https, also behind a TLS proxy that the app hears over http (uvicorn
    trusts X-Forwarded-Proto only from 127.0.0.1): QHOOK_PUBLIC_URL says how people reach it."""
    public = context_of(request).settings.public_url
    return request.url.scheme == "https" or public.lower().startswith("https://")
