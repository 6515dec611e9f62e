"""The server-rendered UI under /ui: login, the Integration Hub, endpoints, the inspector.

Pages only read (viewer role, set restrictions as in the API); every change is a fetch from the
page to the JSON API, which checks the role and the CSRF header (see ``qhook.web.pages``).
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from qhook.api.deps import SESSION_COOKIE, BigId, Ctx
from qhook.api.json_body import JsonBodyRoute
from qhook.context import AppContext
from qhook.domain import credentials
from qhook.domain import inspector as inspector_domain
from qhook.errors import NotFound, QhookError, RateLimited, Unauthorized, ValidationFailed
from qhook.services import hub, inspector, users, workflows
from qhook.services import sets as set_service
from qhook.store import hub as hub_store
from qhook.web import catalog, pages, present
from qhook.web.pages import PageUser, render

router = APIRouter(route_class=JsonBodyRoute, include_in_schema=False)
ATTEMPTS_SHOWN = 100  # newest first, on a delivery's page
router.include_router(catalog.router)

LOGIN_COOKIE = "qhook_login"
# Set at a successful sign-in: this browser is the user's, and spread-out guessing of their name
# (which trips the per-name limit over all addresses) does not hold it off.
KNOWN_COOKIE = "qhook_known"
KNOWN_FOR_S = 365 * 24 * 3600
PAGE_SIZE = 50
STATIC = {
    "app.css": ("text/css; charset=utf-8", pages.HERE / "static" / "app.css"),
    "app.js": ("text/javascript; charset=utf-8", pages.HERE / "static" / "app.js"),
}
HUB_FILTERS = (
    "status",
    "workflow_id",
    "set_id",
    "result_id",
    "signal_id",
    "endpoint",
    "action",
    "since",
    "until",
    "q",
)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui")
def ui_home() -> RedirectResponse:
    return RedirectResponse("/ui/hub", status_code=307)


@router.get("/ui/static/{name}")
def static(name: str) -> Response:
    """A fixed list of files, so no path from the URL ever reaches the file system."""
    if name not in STATIC:
        raise NotFound(f"No static file {name!r}")
    media_type, path = STATIC[name]
    response = FileResponse(Path(path), media_type=media_type)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


# --- login ---------------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only our own pages: an open redirect would turn the login page into a phishing aid."""
    if target and target.startswith("/ui") and "//" not in target and "\\" not in target:
        return target
    return "/ui/hub"


def _login_page(request: Request, next_url: str, error: str = "", status_code: int = 200) -> Response:
    # A login form token in a Strict cookie stops other sites logging people into their account.
    token = secrets.token_urlsafe(24)
    response = render(
        request, "login.html", status_code=status_code, next_url=next_url, login_token=token, error=error
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path="/ui/login",
        httponly=True,
        samesite="strict",
        secure=pages.cookie_secure(request),
    )
    return response


@router.get("/ui/login")
def login_form(request: Request, ctx: Ctx, next: str | None = None) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token and users.session_principal(ctx.db, token) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(request, _safe_next(next))


@router.post("/ui/login")
async def login(request: Request, ctx: Ctx) -> Response:
    form = await request.form()
    name = str(form.get("name") or "").strip()
    password = str(form.get("password") or "")
    next_url = _safe_next(str(form.get("next") or ""))
    sent, expected = str(form.get("login_token") or ""), request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        error = "The login form expired or your browser refuses cookies; please try again."
        return _login_page(request, next_url, error, status_code=400)
    source = request.client.host if request.client else "unknown"
    if "\x00" in name:  # no such user can exist (PostgreSQL would refuse the lookup itself)
        return _login_page(request, next_url, "Unknown user or wrong password.", status_code=401)
    known = _known_browser(ctx, request, name)
    try:
        user = await run_in_threadpool(
            lambda: users.check_login(ctx.db, name, password, source, known_browser=known)
        )
    except RateLimited as exc:
        return _login_page(request, next_url, exc.message + ".", status_code=429)
    except Unauthorized:
        return _login_page(request, next_url, "Unknown user or wrong password.", status_code=401)
    token = await run_in_threadpool(users.open_session, ctx.db, user)
    response = RedirectResponse(next_url, status_code=303)
    pages.set_session_cookie(request, response, token)
    response.delete_cookie(LOGIN_COOKIE, path="/ui/login")
    response.set_cookie(
        KNOWN_COOKIE,
        ctx.box.encrypt(f"known:{user.name.lower()}"),
        max_age=KNOWN_FOR_S,
        path="/ui/login",
        httponly=True,
        samesite="strict",
        secure=pages.cookie_secure(request),
    )
    return response


def _known_browser(ctx: AppContext, request: Request, name: str) -> bool:
    """Whether this browser signed in as ``name`` before (a cookie only qhook can make)."""
    token = request.cookies.get(KNOWN_COOKIE)
    if not token:
        return False
    try:
        return ctx.box.decrypt(token) == f"known:{name.lower()}"
    except QhookError:  # made with another key, or not ours
        return False


@router.post("/ui/logout")
async def logout(request: Request, ctx: Ctx) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    form = await request.form()
    sent = str(form.get("csrf") or "")
    if token and hmac.compare_digest(sent.encode(), users.csrf_token(token).encode()):
        await run_in_threadpool(users.close_session, ctx.db, token)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/ui/account")
def account_page(request: Request, me: PageUser) -> Response:
    """The signed-in person's own settings: for now, their password."""
    return render(request, "account.html")


# --- the Hub -------------------------------------------------------------------------------------


def _names(ctx: Ctx, set_ids: frozenset[int] | None) -> tuple[dict[int, str], dict[int, str]]:
    """Workflow and set names by id, for tables that hold only ids."""
    allowed = sorted(set_ids) if set_ids is not None else None
    flows = {w.id: w.name for w in workflows.list_workflows(ctx.db, set_ids=allowed)}
    known = {s.id: s.name for s in set_service.list_sets(ctx.db, allowed)}
    return flows, known


@router.get("/ui/hub")
def hub_page(request: Request, ctx: Ctx, me: PageUser) -> Response:
    raw = {name: request.query_params.get(name, "") for name in HUB_FILTERS}
    problems: list[str] = []
    filters = hub.Filters(
        status=present.text_or_none(raw["status"]),
        workflow_id=present.parse_id(raw["workflow_id"], "workflow", problems),
        signal_id=present.parse_id(raw["signal_id"], "signal", problems),
        set_id=present.parse_id(raw["set_id"], "set", problems),
        result_id=present.parse_id(raw["result_id"], "result", problems),
        endpoint=present.text_or_none(raw["endpoint"]),
        action=present.text_or_none(raw["action"]),
        since=present.parse_moment(raw["since"], "since", problems),
        until=present.parse_moment(raw["until"], "until", problems),
        q=present.text_or_none(raw["q"]),
    )
    cursor = request.query_params.get("cursor") or None
    rows: list[hub_store.DeliveryRecord] = []
    next_cursor = None
    if not problems:
        try:
            rows, next_cursor = hub.list_deliveries(
                ctx, filters, limit=PAGE_SIZE, cursor=cursor, set_ids=me.set_ids
            )
        except ValidationFailed as exc:
            problems.append(exc.message)
    flows, known_sets = _names(ctx, me.set_ids)
    kept = {k: v for k, v in raw.items() if v.strip()}
    next_url = "/ui/hub?" + urlencode({**kept, "cursor": next_cursor}) if next_cursor else None
    return render(
        request,
        "hub.html",
        rows=rows,
        raw=raw,
        filtered=bool(kept),
        problems=problems,
        next_url=next_url,
        first_url=("/ui/hub?" + urlencode(kept)) if cursor else None,
        statuses=hub_store.STATUSES,
        actions=hub.ACTIONS,
        replayable=hub.REPLAYABLE,
        flows=flows,
        known_sets=known_sets,
    )


@router.get("/ui/hub/{delivery_id}")
def delivery_page(delivery_id: BigId, request: Request, ctx: Ctx, me: PageUser) -> Response:
    detail = hub.delivery_detail(ctx, delivery_id, set_ids=me.set_ids)
    flows, known_sets = _names(ctx, me.set_ids)
    newest_first = list(reversed(detail.attempts))
    return render(
        request,
        "delivery.html",
        d=detail.delivery,
        body=detail.body,
        request_headers=credentials.redacted(detail.request_headers),
        # Probes of a days-long outage make thousands: the newest are the ones read (the API has all).
        attempts=newest_first[:ATTEMPTS_SHOWN],
        attempts_hidden=max(len(newest_first) - ATTEMPTS_SHOWN, 0),
        waiting=detail.waiting,
        redeliverable=detail.delivery.status in hub.REDELIVERABLE,
        cancellable=detail.delivery.status in hub.CANCELLABLE,
        flows=flows,
        known_sets=known_sets,
        body_limit=ctx.settings.response_body_limit,
    )


@router.get("/ui/endpoints")
def endpoints_page(request: Request, ctx: Ctx, me: PageUser) -> Response:
    endpoints = hub.endpoint_summaries(ctx, set_ids=me.set_ids)
    history = hub.recent_endpoint_log(ctx, [e.origin for e in endpoints])
    return render(request, "endpoints.html", endpoints=endpoints, history=history)


# --- the inspector -------------------------------------------------------------------------------


@router.get("/ui/inspector")
def inspector_home(request: Request, ctx: Ctx, me: PageUser, bin: str | None = None) -> Response:
    if bin and inspector_domain.is_bin_id(bin.strip()):
        return RedirectResponse(f"/ui/inspector/{bin.strip()}", status_code=303)
    mine = inspector.bins_of(ctx, me.name)
    return render(request, "inspector_home.html", asked=bin or "", mine=mine)


@router.get("/ui/inspector/{bin_id}")
def inspector_page(bin_id: str, request: Request, ctx: Ctx, me: PageUser) -> Response:
    if not inspector_domain.is_bin_id(bin_id):
        raise NotFound(f"No inspector bin {bin_id!r}")
    maker = inspector.only_maker(me)
    info = inspector.get_bin(ctx, bin_id, only_maker=maker)
    captures = inspector.list_captures(ctx, bin_id, limit=100, only_maker=maker)
    base = ctx.settings.public_url or str(request.base_url)
    shown = []
    for capture in captures:
        body, encoding = inspector_domain.body_for_display(capture.body)
        shown.append((capture, credentials.redacted(capture.headers), body, encoding))
    return render(
        request,
        "inspector.html",
        bin=info.bin,
        captures_kept=info.captures,
        bin_url=inspector_domain.bin_url(base, bin_id),
        captures=shown,
    )
