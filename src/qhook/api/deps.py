"""FastAPI dependencies: the context, the current principal (API key, rate-limited) and role checks."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

from annotated_types import Ge, Le
from fastapi import Depends, Request
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool

from qhook.api.errors import is_compat_path
from qhook.context import AppContext
from qhook.domain import compat
from qhook.domain.access import Principal, Role
from qhook.domain.ids import MAX_BIG_ID, MAX_ID
from qhook.domain.json_text import NUL_EXPECTED, without_nul
from qhook.domain.rates import parse_rate
from qhook.errors import Forbidden, Unauthorized, ValidationFailed, field_error
from qhook.services import users

SESSION_COOKIE = "qhook_session"
TOKEN_PARAMS = ("access_token", "accessToken", "authToken", "authtoken")
CSRF_HEADER = "X-Qhook-CSRF"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def context_of(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


# Cheap dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in the thread pool,
# and each such hop costs more CPU (and GIL hand-offs) than the dependency itself (bench/latency).
async def get_ctx(request: Request) -> AppContext:
    return context_of(request)


Ctx = Annotated[AppContext, Depends(get_ctx)]

Id = Annotated[int, Ge(1), Le(MAX_ID)]
"""The id of a set, result, workflow, signal, user or auth profile in a path, a query or a body:
a 422 naming the parameter when out of range (see ``domain.ids.MAX_ID``)."""
BigId = Annotated[int, Ge(1), Le(MAX_BIG_ID)]
"""The id of an event, delivery or capture."""
JSON_NUMBER_EXPECTED = "a whole number, written as a JSON number (not text)"


def json_number(value: object) -> object:
    """A JSON body's whole number is a JSON number: ``"5"`` (text) and ``true`` are refused,
    ``5`` and ``5.0`` taken."""
    if isinstance(value, str | bool):
        raise PydanticCustomError("json_number", JSON_NUMBER_EXPECTED)
    return value


BodyId = Annotated[int, BeforeValidator(json_number), Ge(1), Le(MAX_ID)]
"""An ``Id`` in a JSON body: a JSON number, as in a workflow's own settings (``"5"`` was taken here
and refused there, ``true`` was 1). Paths and queries are text, so ``Id`` reads them."""
BodyInt = Annotated[int, BeforeValidator(json_number)]


async def refuse_nul(request: Request) -> None:
    """Every route: no NUL character in the path or a query parameter (JSON bodies: ``json_text``).

    PostgreSQL's text cannot hold one: such a request was a 500 there and stored on SQLite.
    """
    if "\x00" in request.url.path:
        raise _nul_refused(request, "path")
    if "%00" in request.url.query:
        for name, value in request.query_params.multi_items():
            if "\x00" in name or "\x00" in value:
                raise _nul_refused(request, without_nul(name))


def _nul_refused(request: Request, field: str) -> ValidationFailed:
    if is_compat_path(request.url.path):  # the compat API's own wording and status
        return compat.bad_parameter(field, f"Expected {NUL_EXPECTED}.")
    return field_error(field, NUL_EXPECTED)


def carried_token(request: Request, params: Mapping[str, str]) -> str | None:
    """The key a request carries: ``Authorization: Bearer``, else one of the ``TOKEN_PARAMS``."""
    return bearer_token(request) or next((params[n] for n in TOKEN_PARAMS if params.get(n)), None)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def authenticate_token(request: Request, ctx: AppContext, token: str | None) -> Principal:
    """Resolve a key, count it against the rate limit and remember the headers for the response."""
    if not token:
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'")
    rate = parse_rate(ctx.settings.api_rate_limit, "QHOOK_API_RATE_LIMIT")
    source = request.client.host if request.client else "unknown"
    try:
        principal, state = await run_in_threadpool(users.authenticate_key, ctx.db, token, rate, None, source)
    except Unauthorized:
        # The key that was checked is bad: the answer counts against the address, whatever other
        # (good) key the request also carries (compat lets a body token win over the query's).
        request.state.key_refused = True
        raise
    request.state.rate_state = state
    return principal


async def current_principal(request: Request, ctx: Ctx) -> Principal:
    """Bearer API key for the API; the UI's session cookie also works so the UI can call the API."""
    token = bearer_token(request)
    if token is None:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            principal = await run_in_threadpool(users.session_principal, ctx.db, cookie)
            if principal is not None:
                check_csrf(request, cookie)
                rate = parse_rate(ctx.settings.ui_rate_limit, "QHOOK_UI_RATE_LIMIT")
                request.state.rate_state = await run_in_threadpool(
                    users.count_request, ctx.db, f"session:{principal.user_id}", rate
                )
                return principal
    return await authenticate_token(request, ctx, token)


def check_csrf(request: Request, session_token: str) -> None:
    """Browsers attach the session cookie to requests other sites make; a change must also carry
    the session's CSRF token in a header, which only qhook's own pages can read and send."""
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent.encode(), users.csrf_token(session_token).encode()):
        raise Forbidden(f"Missing or wrong {CSRF_HEADER} header: reload the page and try again")


CurrentUser = Annotated[Principal, Depends(current_principal)]


def require(role: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets ``role`` or a higher role through."""

    async def _check(principal: CurrentUser) -> Principal:
        if not principal.has_role(role):
            raise Forbidden(f"This needs the {role} role; {principal.name} is {principal.role}")
        return principal

    return _check


async def _every_set_admin(principal: CurrentUser) -> Principal:
    # Users, keys, auth profiles (shared by every set's workflows) and the audit trail span all
    # sets: an admin limited to some could otherwise lift their own limit or act as another admin.
    if not principal.has_role("admin"):
        raise Forbidden(f"This needs the admin role; {principal.name} is {principal.role}")
    if principal.set_ids is not None:
        raise Forbidden(
            f"This needs an admin of every set; {principal.name} is an admin limited to some sets"
        )
    return principal


Viewer = Annotated[Principal, Depends(require("viewer"))]
Editor = Annotated[Principal, Depends(require("editor"))]
Admin = Annotated[Principal, Depends(require("admin"))]
FullAdmin = Annotated[Principal, Depends(_every_set_admin)]
