"""OAuth2 client credentials against a real token endpoint: fetched once, shared via the DB, refreshed."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from qhook.context import AppContext, open_context
from qhook.delivery import auth
from qhook.services import auth_profiles
from qhook.services.auth_profiles import AuthProfile
from qhook.settings import Settings
from tests.support.delivery import (
    attempts_of,
    delivery,
    enqueue,
    make_signal,
    receiver,
    running_worker,
    until,
)

CLIENT_SECRET = "cs-very-secret-81f2"


class TokenEndpoint:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, str]]] = []
        self.expires_in = 3600
        self.status = 200
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append((dict(request.headers), form))
        await asyncio.sleep(0.05)  # slow enough for concurrent callers to pile up
        if self.status != 200:
            return web.json_response({"error": "invalid_client"}, status=self.status)
        return web.json_response(
            {
                "access_token": f"tok-{len(self.requests)}",
                "token_type": "Bearer",
                "expires_in": self.expires_in,
            }
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/token", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"


@pytest.fixture
async def endpoint() -> AsyncIterator[TokenEndpoint]:
    server = TokenEndpoint()
    await server.start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


def _profile(ctx: AppContext, endpoint: TokenEndpoint, client_auth: str = "basic") -> AuthProfile:
    view = auth_profiles.create_profile(
        ctx,
        {
            "name": f"ERP OAuth {client_auth}",
            "type": "oauth2_client_credentials",
            "token_url": endpoint.url,
            "client_id": "qhook",
            "client_secret": CLIENT_SECRET,
            "scope": "batches.write",
            "audience": "erp",
            "client_auth": client_auth,
            "allowed_domains": ["erp.example.com"],
        },
        "alice",
    )
    return auth_profiles.load_profile(ctx, view.id)


def _loopback_profile(ctx: AppContext, name: str, token_url: str) -> int:
    """An OAuth2 profile whose token endpoint and receivers are on 127.0.0.1; its id."""
    view = auth_profiles.create_profile(
        ctx,
        {
            "name": name,
            "type": "oauth2_client_credentials",
            "token_url": token_url,
            "client_id": "qhook",
            "client_secret": CLIENT_SECRET,
            "allowed_domains": ["127.0.0.1"],
        },
        "alice",
    )
    return view.id


async def test_token_fetched_once_for_many_calls(ctx: AppContext, endpoint: TokenEndpoint) -> None:
    profile = _profile(ctx, endpoint)
    headers = await asyncio.gather(*(auth.auth_headers(ctx, profile) for _ in range(25)))
    assert {h["Authorization"] for h in headers} == {"Bearer tok-1"}
    assert len(endpoint.requests) == 1
    request_headers, form = endpoint.requests[0]
    expected = base64.b64encode(f"qhook:{CLIENT_SECRET}".encode()).decode()
    assert request_headers["Authorization"] == f"Basic {expected}"
    assert form == {"grant_type": "client_credentials", "scope": "batches.write", "audience": "erp"}
    for _ in range(10):
        await auth.auth_headers(ctx, profile)
    assert len(endpoint.requests) == 1


async def test_client_secret_in_body(ctx: AppContext, endpoint: TokenEndpoint) -> None:
    profile = _profile(ctx, endpoint, client_auth="body")
    assert await auth.access_token(ctx, profile) == "tok-1"
    headers, form = endpoint.requests[0]
    assert "Authorization" not in headers
    assert form["client_id"] == "qhook" and form["client_secret"] == CLIENT_SECRET


async def test_token_shared_via_database_and_refreshed_after_invalidate(
    ctx: AppContext, settings: Settings, endpoint: TokenEndpoint
) -> None:
    profile = _profile(ctx, endpoint)
    assert await auth.access_token(ctx, profile) == "tok-1"
    other = open_context(settings)  # another worker: its own process cache, same database
    try:
        assert await auth.access_token(other, profile) == "tok-1"
        assert len(endpoint.requests) == 1

        await auth.invalidate(ctx, profile.id, "tok-1")  # the endpoint answered 401 with tok-1
        assert await auth.access_token(ctx, profile) == "tok-2"
        assert len(endpoint.requests) == 2

        # The other worker still holds tok-1; after its own 401 it finds tok-2 in the database.
        assert await auth.access_token(other, profile) == "tok-1"
        await auth.invalidate(other, profile.id, "tok-1")
        assert await auth.access_token(other, profile) == "tok-2"
        assert len(endpoint.requests) == 2
    finally:
        other.db.dispose()


async def test_token_encrypted_at_rest(ctx: AppContext, endpoint: TokenEndpoint) -> None:
    from sqlalchemy import select

    from qhook.store.tables import oauth_tokens

    profile = _profile(ctx, endpoint)
    await auth.access_token(ctx, profile)
    with ctx.db.reading() as tx:
        raw = tx.execute(select(oauth_tokens.c.token_enc)).scalar_one()
    assert "tok-1" not in raw and ctx.box.decrypt(raw) == "tok-1"


async def test_expired_token_is_refetched(ctx: AppContext, endpoint: TokenEndpoint) -> None:
    endpoint.expires_in = 1
    profile = _profile(ctx, endpoint)
    assert await auth.access_token(ctx, profile) == "tok-1"
    await asyncio.sleep(1.1)
    assert await auth.access_token(ctx, profile) == "tok-2"


async def test_a_huge_expires_in_is_kept_a_year_at_most(ctx: AppContext, endpoint: TokenEndpoint) -> None:
    # timedelta(seconds=10**20) overflowed: every attempt with the profile failed inside qhook.
    from sqlalchemy import select

    from qhook.store.tables import oauth_tokens

    endpoint.expires_in = 10**20
    profile = _profile(ctx, endpoint)
    assert await auth.access_token(ctx, profile) == "tok-1"
    assert await auth.access_token(ctx, profile) == "tok-1"  # cached, not fetched again
    with ctx.db.reading() as tx:
        stored = tx.execute(select(oauth_tokens.c.expires_at, oauth_tokens.c.fetched_at)).one()
    assert stored.expires_at - stored.fetched_at == auth.MAX_TOKEN_LIFETIME


async def test_token_endpoint_failure_is_auth_error_without_secret(
    ctx: AppContext, endpoint: TokenEndpoint
) -> None:
    endpoint.status = 401
    profile = _profile(ctx, endpoint)
    with pytest.raises(auth.AuthFailed) as info:
        await auth.auth_headers(ctx, profile)
    assert info.value.kind == "auth" and not info.value.permanent
    assert "answered 401 (invalid_client)" in info.value.message
    assert CLIENT_SECRET not in info.value.message


async def test_resolve_auth_refuses_other_domains(ctx: AppContext, endpoint: TokenEndpoint) -> None:
    profile = _profile(ctx, endpoint)
    with pytest.raises(auth.DomainNotAllowed) as info:
        await auth.resolve_auth(ctx, profile, "https://evil.example.org/hook")
    assert info.value.permanent and info.value.message.startswith("allowed_domains: evil.example.org")
    assert endpoint.requests == []  # no token was even fetched
    resolved = await auth.resolve_auth(ctx, profile, "https://erp.example.com/api")
    assert resolved.headers == {"Authorization": "Bearer tok-1"} and resolved.token == "tok-1"
    assert resolved.secret_header_names == frozenset({"authorization"})


async def test_basic_and_header_profiles(ctx: AppContext) -> None:
    basic = auth_profiles.create_profile(
        ctx,
        {"name": "b", "type": "basic", "username": "u", "password": "p", "allowed_domains": ["h.example"]},
        "alice",
    )
    header = auth_profiles.create_profile(
        ctx,
        {
            "name": "h",
            "type": "header",
            "header_name": "X-API-Key",
            "header_value": "k-1",
            "allowed_domains": ["h.example"],
        },
        "alice",
    )
    resolved = await auth.resolve_auth(ctx, auth_profiles.load_profile(ctx, basic.id), "https://h.example/")
    assert resolved.headers == {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    resolved = await auth.resolve_auth(ctx, auth_profiles.load_profile(ctx, header.id), "https://h.example/")
    assert resolved.headers == {"X-API-Key": "k-1"} and resolved.secret_header_names == {"x-api-key"}


async def test_auth_for_signal_profile_ids(ctx: AppContext, endpoint: TokenEndpoint) -> None:
    profile = _profile(ctx, endpoint)
    assert await auth.auth_for(ctx, None, "https://erp.example.com/", set_id=None) is None
    resolved = await auth.auth_for(ctx, profile.id, "https://erp.example.com/", set_id=None)
    assert resolved is not None and resolved.profile_name == "ERP OAuth basic"
    with pytest.raises(auth.ProfileMissing) as info:
        await auth.auth_for(ctx, 999, "https://erp.example.com/", set_id=None)
    assert info.value.permanent and info.value.kind == "auth"


async def test_send_refreshes_once_after_401(ctx: AppContext, endpoint: TokenEndpoint) -> None:
    """The whole path: resolve auth, build, send to a receiver that revoked tok-1, invalidate, resend."""
    from dataclasses import dataclass, field
    from typing import Any

    from qhook.clock import utcnow
    from qhook.delivery.prepare import build_request, redact
    from qhook.delivery.sender import Sender
    from qhook.domain.signing import new_secret

    seen: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.Response(status=204 if request.headers.get("Authorization") == "Bearer tok-2" else 401)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    profile_id = _loopback_profile(ctx, "local", endpoint.url)

    @dataclass(frozen=True)
    class Delivery:
        webhook_id: str = "msg_1"
        url: str = f"http://127.0.0.1:{port}/hook"
        body: str = "{}"

    @dataclass(frozen=True)
    class Signal:
        config: dict[str, Any] = field(default_factory=lambda: {"auth_profile_id": profile_id})
        secret_enc: str | None = ctx.box.encrypt(new_secret())
        previous_secret_enc: str | None = None
        previous_secret_until: None = None

    sender = Sender(ctx.settings)
    try:
        resolved = await auth.auth_for(ctx, profile_id, Delivery().url, set_id=None, sender=sender)
        assert resolved is not None
        request = build_request(ctx, Delivery(), Signal(), resolved, utcnow())
        first = await sender.send(request)
        assert first.status_code == 401
        assert redact(request.headers, request.secret_header_names)["Authorization"] == "[redacted]"
        await auth.invalidate(ctx, profile_id, resolved.token)
        resolved = await auth.auth_for(ctx, profile_id, Delivery().url, set_id=None, sender=sender)
        assert resolved is not None
        second = await sender.send(build_request(ctx, Delivery(), Signal(), resolved, utcnow()))
    finally:
        await sender.close()
        await runner.cleanup()
    assert second.status_code == 204
    assert seen == ["Bearer tok-1", "Bearer tok-2"]
    assert len(endpoint.requests) == 2


async def test_the_call_refused_with_401_is_on_record(ctx: AppContext, endpoint: TokenEndpoint) -> None:
    """A receiver that refuses the cached token gets two calls (401, then a fresh token); the Hub
    showed only the second. When no fresh token comes, the receiver's 401 was thrown away and the
    attempt showed no status at all."""

    accepted = {"Bearer tok-2"}

    async def answer(request: web.Request) -> web.Response:
        ok = request.headers.get("Authorization") in accepted
        return web.Response(status=204) if ok else web.Response(status=401, text="token revoked")

    async with receiver(answer) as server:
        profile_id = _loopback_profile(ctx, "local", endpoint.url)
        signal_id = make_signal(ctx, server.url, auth_profile_id=profile_id)
        [renewed] = enqueue(ctx, signal_id, server.url, ['{"n": 1}'])
        async with running_worker(ctx):
            await until(lambda: delivery(ctx, renewed).status == "succeeded")
        first, second = attempts_of(ctx, renewed)
        assert (first.number, first.status_code, first.response_body) == (1, 401, "token revoked")
        assert first.request_headers["Authorization"] == "[redacted]"
        assert first.hint == (
            "The receiver refused the cached access token of auth profile 'local' (401): qhook forgot "
            "it, fetched a new one and sent again at once (attempt 2)."
        )
        assert (second.number, second.status_code, second.hint) == (2, 204, None)
        assert first.started_at <= second.started_at
        assert delivery(ctx, renewed).attempt_count == 2

        accepted.clear()  # tok-2 is refused too, and the token endpoint fails
        endpoint.status = 500
        [stuck] = enqueue(ctx, signal_id, server.url, ['{"n": 2}'])
        async with running_worker(ctx):
            await until(lambda: delivery(ctx, stuck).status == "retrying")
        [only] = attempts_of(ctx, stuck)
        assert (only.status_code, only.error_kind, only.response_body) == (401, "auth", "token revoked")
        assert only.hint.startswith("qhook could not get an access token for auth profile 'local' (")
        assert "the receiver answered 401 to the cached token" in only.hint
        assert [r.headers["Authorization"] for r in server.received] == [
            "Bearer tok-1",
            "Bearer tok-2",
            "Bearer tok-2",
        ]


async def test_a_token_failure_before_sending_names_the_profile_and_the_cause(ctx: AppContext) -> None:
    """The hint said "the auth profile" when the token could not be had before sending, and a token
    URL answering 200 with a login page was "answered 200"."""

    async def login_page(request: web.Request) -> web.Response:
        if request.path == "/token":
            return web.Response(text="<html>Sign in</html>", content_type="text/html")
        return web.Response(status=204)

    async with receiver(login_page) as server:
        profile_id = _loopback_profile(ctx, "sso", server.url.replace("/hook", "/token"))
        signal_id = make_signal(ctx, server.url, auth_profile_id=profile_id)
        [waiting] = enqueue(ctx, signal_id, server.url, ["{}"])
        async with running_worker(ctx):
            await until(lambda: delivery(ctx, waiting).status == "retrying")
    [attempt] = attempts_of(ctx, waiting)
    assert attempt.status_code is None and attempt.error_kind == "auth"
    assert attempt.error == "token endpoint 127.0.0.1 answered 200 with no JSON object"
    assert attempt.hint.startswith("qhook could not get an access token for auth profile 'sso' (")
    assert "not a login page" in attempt.hint
    assert [r.path for r in server.received] == ["/token"]


async def test_a_changed_profile_is_used_from_the_next_claim(
    ctx: AppContext, endpoint: TokenEndpoint
) -> None:
    """The worker kept its copy of a profile for 5 s: a password or client secret rotated because it
    leaked was still sent meanwhile, and the old token too (found by a workflow author's review)."""
    async with receiver() as server:
        basic = auth_profiles.create_profile(
            ctx,
            {
                "name": "ERP basic",
                "type": "basic",
                "username": "qhook",
                "password": "old-password",
                "allowed_domains": ["127.0.0.1"],
            },
            "alice",
        ).id
        oauth = _loopback_profile(ctx, "ERP oauth", endpoint.url)
        basic_signal = make_signal(ctx, server.url, auth_profile_id=basic)
        oauth_signal = make_signal(ctx, server.url, auth_profile_id=oauth)
        async with running_worker(ctx):
            first = enqueue(ctx, basic_signal, server.url, ['{"n": 1}']) + enqueue(
                ctx, oauth_signal, server.url, ['{"n": 2}']
            )
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in first))
            auth_profiles.update_profile(ctx, basic, {"password": "new-password"}, "alice")
            auth_profiles.update_profile(ctx, oauth, {"client_secret": "rotated-secret"}, "alice")
            second = enqueue(ctx, basic_signal, server.url, ['{"n": 3}']) + enqueue(
                ctx, oauth_signal, server.url, ['{"n": 4}']
            )
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in second))
    sent = {r.body: r.headers["Authorization"] for r in server.received}
    assert sent[b'{"n": 1}'] == "Basic " + base64.b64encode(b"qhook:old-password").decode()
    assert sent[b'{"n": 3}'] == "Basic " + base64.b64encode(b"qhook:new-password").decode()
    assert (sent[b'{"n": 2}'], sent[b'{"n": 4}']) == ("Bearer tok-1", "Bearer tok-2")
    token_request_auth = endpoint.requests[-1][0]["Authorization"]
    assert token_request_auth == "Basic " + base64.b64encode(b"qhook:rotated-secret").decode()
