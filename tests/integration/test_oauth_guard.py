"""The OAuth2 token request under the webhooks' rules: the SSRF guard for IP literals, and mTLS.

Real token endpoints on 127.0.0.1 (plain and TLS with a required client certificate), SQLite and
PostgreSQL.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.delivery import auth
from qhook.services import auth_profiles
from qhook.services.auth_profiles import AuthProfile
from tests.support.certs import make_pki
from tests.support.delivery import (
    attempts_of,
    delivery,
    enqueue,
    make_signal,
    receiver,
    running_worker,
    until,
)

CLIENT_SECRET = "cs-guarded-5c1e"


@asynccontextmanager
async def token_endpoint(context: ssl.SSLContext | None = None) -> AsyncIterator[dict[str, Any]]:
    """A token endpoint on 127.0.0.1; ``seen`` lists each request's client certificate subject (or None)."""
    state: dict[str, Any] = {"seen": []}

    async def handle(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(item[0] for item in peer["subject"]) if peer else None
        state["seen"].append(subject.get("commonName") if subject else None)
        return web.json_response({"access_token": "tok-guarded", "token_type": "Bearer", "expires_in": 600})

    app = web.Application()
    app.router.add_post("/token", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    assert site._server is not None
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state["url"] = f"{'https' if context else 'http'}://127.0.0.1:{port}/token"
    try:
        yield state
    finally:
        await runner.cleanup()


def _profile(ctx: AppContext, token_url: str, **extra: Any) -> AuthProfile:
    view = auth_profiles.create_profile(
        ctx,
        {
            "name": f"OAuth {token_url}",
            "type": "oauth2_client_credentials",
            "token_url": token_url,
            "client_id": "qhook",
            "client_secret": CLIENT_SECRET,
            "allowed_domains": ["127.0.0.1"],
            **extra,
        },
        "alice",
    )
    return auth_profiles.load_profile(ctx, view.id)


async def test_metadata_address_as_token_url_is_refused_before_connecting(ctx: AppContext) -> None:
    profile = _profile(ctx, "https://169.254.169.254/token")
    with pytest.raises(auth.AuthFailed) as info:
        await auth.access_token(ctx, profile)
    assert isinstance(info.value, auth.TokenEndpointRefused) and info.value.permanent
    assert info.value.kind == "auth"
    assert "cloud metadata" in info.value.message and "QHOOK_ALLOWED_TARGET_NETWORKS" in info.value.message
    assert CLIENT_SECRET not in info.value.message


async def test_loopback_literal_token_url_makes_no_connection_unless_allowed(ctx: AppContext) -> None:
    """With no allowed networks the guard refuses 127.0.0.1 and the endpoint sees nothing; the test
    settings allow 127.0.0.0/8, and then the same profile gets its token."""
    strict = ctx.settings.model_copy(update={"allowed_target_networks": ""})
    async with token_endpoint() as endpoint:
        profile = _profile(ctx, endpoint["url"])
        with pytest.raises(auth.TokenEndpointRefused) as info:
            await auth.fetch_token(strict, profile, now=utcnow())
        assert "127.0.0.1 is loopback" in info.value.message
        assert endpoint["seen"] == []
        token = await auth.fetch_token(ctx.settings, profile, now=utcnow())
    assert token.value == "tok-guarded" and len(endpoint["seen"]) == 1


async def test_refused_token_endpoint_fails_the_delivery_at_once_with_a_hint(ctx: AppContext) -> None:
    profile = _profile(ctx, "https://169.254.169.254/token")
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url, auth_profile_id=profile.id)
        [delivery_id] = enqueue(ctx, signal_id, rx.url, ["{}"])
        async with running_worker(ctx):
            row = await until(lambda: (d := delivery(ctx, delivery_id)).status == "failed" and d)
    assert rx.received == []
    [attempt] = attempts_of(ctx, delivery_id)
    assert attempt.error_kind == "auth" and row.attempt_count == 1
    assert "SSRF guard" in attempt.hint and "QHOOK_ALLOWED_TARGET_NETWORKS" in attempt.hint


async def test_token_request_presents_the_profile_client_certificate(ctx: AppContext, tmp_path: Path) -> None:
    server_pki = make_pki(("127.0.0.1",))
    client_pki = make_pki(("qhook-client",), client=True)
    _, cert, key = server_pki.write(tmp_path / "server")
    client_ca, _, _ = client_pki.write(tmp_path / "client")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no handshake
    context.load_verify_locations(client_ca)
    async with token_endpoint(context) as endpoint:
        profile = _profile(
            ctx,
            endpoint["url"],
            ca_cert=server_pki.ca_pem,
            client_cert=client_pki.cert_pem,
            client_key=client_pki.key_pem,
        )
        assert await auth.access_token(ctx, profile) == "tok-guarded"
    assert endpoint["seen"] == ["qhook-client"]
