"""X-RateLimit-* headers on every API response, including the ones no valid key reached.

A request whose key was checked carries that key's counter (``request.state.rate_state``). A
request answered before its key was checked (an unknown route or compat operation, 413, a compat
400 raised while parsing) counts against the key it carries, in the header or the query string,
when that key is valid. Every other request under ``/api`` (401, no key, the OpenAPI document)
counts against its client address's shared bucket, and past the limit its answer becomes a 429:
key guessing and scanning slow down, and the headers are always true. Before, a script calling an
operation qhook lacks with a good key filled its address's bucket, and then every key from that
address was refused.
"""

from __future__ import annotations

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qhook.api.deps import carried_token
from qhook.context import AppContext
from qhook.domain.rates import parse_rate
from qhook.errors import QhookError, RateLimited
from qhook.services import users
from qhook.services.users import RateState


def is_api_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def header_values(state: RateState) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(state.limit),
        "X-RateLimit-Remaining": str(state.remaining),
        "X-RateLimit-Retry-After": str(state.retry_after_s),
    }


class RateHeaders:
    """Outermost middleware: sees every answer, the BodyLimit's 413 included."""

    def __init__(self, app: ASGIApp, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The same dict backs request.state everywhere below, so the key check's counter shows here.
        state: dict[str, object] = scope.setdefault("state", {})
        api = is_api_path(scope["path"])
        replaced = False

        async def send_with_headers(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the app's own body of an answer we turned into a 429
            if message["type"] == "http.response.start":
                rate_state = state.get("rate_state")
                if rate_state is None and api:
                    try:
                        rate_state = await self._count_key(scope)
                        if rate_state is None:
                            rate_state = await self._count_source(scope)
                    except RateLimited as exc:
                        replaced = True
                        await _too_many(send, exc)
                        return
                    except QhookError:
                        # The database is away (the answer is most likely its 503): counting
                        # failed too, and the answer goes without rate headers rather than as a
                        # 500 in place of the one already started.
                        rate_state = None
                if isinstance(rate_state, RateState):
                    headers = MutableHeaders(scope=message)
                    for name, value in header_values(rate_state).items():
                        headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _count_key(self, scope: Scope) -> RateState | None:
        if scope["state"].get("key_refused"):
            return None  # a key was checked and refused: a guess, counted against the address
        request = Request(scope)
        token = carried_token(request, request.query_params)
        if not token:
            return None
        rate = parse_rate(self.ctx.settings.api_rate_limit, "QHOOK_API_RATE_LIMIT")
        return await run_in_threadpool(users.count_key_request, self.ctx.db, token, rate)

    async def _count_source(self, scope: Scope) -> RateState:
        client = scope.get("client")
        source = client[0] if client else "unknown"
        rate = parse_rate(self.ctx.settings.api_rate_limit, "QHOOK_API_RATE_LIMIT")
        try:
            return await run_in_threadpool(
                users.count_request, self.ctx.db, users.source_bucket(source), rate
            )
        except RateLimited as exc:
            retry_after_s = exc.rate_state.retry_after_s  # type: ignore[attr-defined]
            exc.message = f"Too many requests without a valid API key; retry in {retry_after_s} s"
            raise


async def _too_many(send: Send, exc: RateLimited) -> None:
    rate_state: RateState = exc.rate_state  # type: ignore[attr-defined]
    body = orjson.dumps({"error": exc.message})
    headers = {
        **header_values(rate_state),
        "Retry-After": str(rate_state.retry_after_s),
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
    }
    raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": 429, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})
