"""Credentials for outgoing requests; OAuth2 client-credentials tokens fetched once and shared.

A token lives in three places: this process's cache (no I/O on the hot path), the ``oauth_tokens``
table (encrypted; every worker on the database shares it) and the token endpoint (asked only when
neither has a token that is still good). On a 401 the worker calls ``invalidate`` with the token
it used and retries once with a fresh one. The token request is built with Authlib and sent with
aiohttp under the webhooks' rules: the SSRF guard (resolver and IP-literal check), the TLS policy,
and the profile's CA and client certificate (mTLS).
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from weakref import WeakKeyDictionary

import aiohttp
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749 import OAuth2Token
from authlib.oauth2.rfc6749.parameters import prepare_token_request
from yarl import URL

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.delivery.sender import Sender, tls_context
from qhook.delivery.ssrf import AddressPolicy, GuardedResolver, SsrfBlocked
from qhook.domain.urls import host_of
from qhook.errors import DeliveryError, NotFound
from qhook.services.auth_profiles import (
    AuthProfile,
    is_allowed,
    load_profile,
    refusal_message,
    serves_set,
    set_refusal_message,
)
from qhook.settings import Settings
from qhook.store import auth_profiles as store
from qhook.store.db import Database

TOKEN_MARGIN = timedelta(seconds=60)
DEFAULT_TOKEN_LIFETIME = timedelta(hours=1)  # when the endpoint does not say (expires_in absent)
# The longest a token is kept, whatever expires_in says (a huge one overflowed timedelta: every
# attempt of the profile's deliveries then failed inside qhook).
MAX_TOKEN_LIFETIME = timedelta(days=365)
TOKEN_TIMEOUT = aiohttp.ClientTimeout(total=15, sock_connect=5)
PROFILE_CACHE_S = 5.0  # profiles change rarely; a short cache keeps a DB read off most attempts


class AuthFailed(DeliveryError):
    """No credentials could be attached; error kind ``auth``. ``permanent``: retrying will not help.
    ``profile_name``: the profile's name, for the hint (set by ``auth_for`` when it knows it)."""

    permanent = False
    profile_name: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="auth")


class ProfileMissing(AuthFailed):
    """The signal names an auth profile that no longer exists."""

    permanent = True


class DomainNotAllowed(AuthFailed):
    """The target's host is not in the profile's allowed domains (message starts "allowed_domains:")."""

    permanent = True


class SetNotServed(AuthFailed):
    """The delivery's set is not in the profile's ``set_ids`` (message starts "set_ids:")."""

    permanent = True


class TokenEndpointRefused(AuthFailed):
    """The token URL points at an address the SSRF guard refuses; no connection was made."""

    permanent = True

    def __init__(self, host: str, blocked: SsrfBlocked) -> None:
        super().__init__(
            f"token endpoint {host} is refused by the SSRF guard ({'; '.join(blocked.reasons)}); if it is"
            " intended, add its network to QHOOK_ALLOWED_TARGET_NETWORKS"
        )


@dataclass(frozen=True, slots=True)
class ResolvedAuth:
    """What a profile adds to one request; ``token`` is the OAuth token used (for ``invalidate``)."""

    profile_id: int
    profile_name: str
    headers: dict[str, str]
    secret_header_names: frozenset[str]
    ssl_context: ssl.SSLContext | None = None
    token: str | None = None


@dataclass(frozen=True, slots=True)
class CachedToken:
    value: str
    expires_at: datetime
    fetched_at: datetime

    def usable(self, now: datetime) -> bool:
        margin = min(TOKEN_MARGIN, (self.expires_at - self.fetched_at) / 10)
        return now < self.expires_at - margin


# Per database (a process may hold several in tests): profile id -> token, and single-flight locks.
_tokens: WeakKeyDictionary[Database, dict[int, CachedToken]] = WeakKeyDictionary()
_locks: WeakKeyDictionary[Database, dict[int, asyncio.Lock]] = WeakKeyDictionary()


_profiles: WeakKeyDictionary[Database, dict[int, tuple[float, AuthProfile]]] = WeakKeyDictionary()


async def auth_for(
    ctx: AppContext,
    profile_id: int | None,
    url: str,
    *,
    set_id: int | None,
    sender: Sender | None = None,
    changed_at: datetime | None = None,
) -> ResolvedAuth | None:
    """``resolve_auth`` for a signal's ``auth_profile_id`` (None: no auth).

    The profile is cached briefly; ``changed_at`` (when the profile last changed, as the worker read
    it with the signal) makes an older copy be read again. Without it, a changed password, client
    secret or token URL was still used for up to ``PROFILE_CACHE_S``, and with it the old token.
    """
    if profile_id is None:
        return None
    profiles = _profiles.setdefault(ctx.db, {})
    loop_time = asyncio.get_running_loop().time()
    cached = profiles.get(profile_id)
    if (
        cached is None
        or loop_time - cached[0] > PROFILE_CACHE_S
        or (changed_at is not None and cached[1].updated_at < changed_at)
    ):
        try:
            profile = await asyncio.to_thread(load_profile, ctx, profile_id)
        except NotFound as exc:
            profiles.pop(profile_id, None)
            raise ProfileMissing(f"auth profile {profile_id} does not exist any more") from exc
        cached = (loop_time, profile)
        profiles[profile_id] = cached
    try:
        return await resolve_auth(ctx, cached[1], url, set_id=set_id, sender=sender)
    except AuthFailed as exc:
        exc.profile_name = cached[1].name
        raise


def forget_profile(ctx: AppContext, profile_id: int) -> None:
    """Drop this process's cached copy of a profile (after it was changed here)."""
    _profiles.get(ctx.db, {}).pop(profile_id, None)
    _cache(ctx).pop(profile_id, None)


def _cache(ctx: AppContext) -> dict[int, CachedToken]:
    return _tokens.setdefault(ctx.db, {})


def _lock(ctx: AppContext, profile_id: int) -> asyncio.Lock:
    return _locks.setdefault(ctx.db, {}).setdefault(profile_id, asyncio.Lock())


async def resolve_auth(
    ctx: AppContext,
    profile: AuthProfile,
    url: str,
    *,
    set_id: int | None = None,
    sender: Sender | None = None,
) -> ResolvedAuth:
    """Headers, secret header names and TLS context for sending a delivery of ``set_id`` to ``url``
    with ``profile`` (None: of no set, which only a profile for every set serves).

    Raises ``SetNotServed`` or ``DomainNotAllowed`` (permanent), or ``AuthFailed`` (token endpoint
    trouble; retryable). The save-time checks are repeated here: the profile may have changed since.
    """
    if not serves_set(profile, set_id):
        raise SetNotServed(set_refusal_message(profile, set_id))
    if not is_allowed(profile, url):
        raise DomainNotAllowed(refusal_message(profile, url))
    headers = await auth_headers(ctx, profile)
    context = None
    ca_cert, client_cert = profile.config.get("ca_cert"), profile.config.get("client_cert")
    if ca_cert or client_cert:
        key = f"{profile.id}:{profile.updated_at.isoformat()}"
        tls = dict(ca_cert=ca_cert, client_cert=client_cert, client_key=profile.secrets.get("client_key"))
        if sender is not None:
            context = sender.profile_tls(key, **tls)
        else:
            context = tls_context(ctx.settings, **tls)
    token = headers["Authorization"].removeprefix("Bearer ") if profile.type.startswith("oauth2") else None
    return ResolvedAuth(
        profile_id=profile.id,
        profile_name=profile.name,
        headers=headers,
        secret_header_names=frozenset(name.lower() for name in headers),
        ssl_context=context,
        token=token,
    )


async def auth_headers(ctx: AppContext, profile: AuthProfile) -> dict[str, str]:
    """The headers a profile adds: Basic, its static header, or ``Bearer <token>``."""
    if profile.type == "basic":
        pair = f"{profile.config['username']}:{profile.secrets['password']}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    if profile.type == "header":
        return {str(profile.config["header_name"]): profile.secrets["header_value"]}
    if profile.type == "oauth2_client_credentials":
        return {"Authorization": f"Bearer {await access_token(ctx, profile)}"}
    raise AuthFailed(f"auth profile {profile.name!r} has an unknown type {profile.type!r}")


async def access_token(ctx: AppContext, profile: AuthProfile) -> str:
    """A token that is still good: from this process, else the database, else the token endpoint."""
    cached = _cache(ctx).get(profile.id)
    if cached is not None and cached.usable(utcnow()) and cached.fetched_at >= profile.updated_at:
        return cached.value
    async with _lock(ctx, profile.id):  # concurrent deliveries wait for one fetch
        now = utcnow()
        cached = _cache(ctx).get(profile.id)
        if cached is not None and cached.usable(now) and cached.fetched_at >= profile.updated_at:
            return cached.value
        stored = await asyncio.to_thread(_load, ctx, profile.id)
        if stored is not None and stored.usable(now) and stored.fetched_at >= profile.updated_at:
            _cache(ctx)[profile.id] = stored
            return stored.value
        token = await fetch_token(ctx.settings, profile, now=now)
        await asyncio.to_thread(_save, ctx, profile.id, token)
        _cache(ctx)[profile.id] = token
        return token.value


async def invalidate(ctx: AppContext, profile_id: int, rejected_token: str | None = None) -> None:
    """Forget a token the endpoint rejected (401), here and in the database.

    With ``rejected_token``, a newer token another delivery or worker already fetched is kept.
    """
    async with _lock(ctx, profile_id):
        cached = _cache(ctx).get(profile_id)
        if cached is not None and (rejected_token is None or cached.value == rejected_token):
            del _cache(ctx)[profile_id]
        await asyncio.to_thread(_forget, ctx, profile_id, rejected_token)


def _load(ctx: AppContext, profile_id: int) -> CachedToken | None:
    with ctx.db.reading() as tx:
        stored = store.token_for(tx, profile_id)
    if stored is None:
        return None
    return CachedToken(ctx.box.decrypt(stored.token_enc), stored.expires_at, stored.fetched_at)


def _save(ctx: AppContext, profile_id: int, token: CachedToken) -> None:
    with ctx.db.transaction() as tx:
        store.save_token(
            tx,
            profile_id,
            token_enc=ctx.box.encrypt(token.value),
            expires_at=token.expires_at,
            fetched_at=token.fetched_at,
        )


def _forget(ctx: AppContext, profile_id: int, rejected_token: str | None) -> None:
    with ctx.db.transaction() as tx:
        stored = store.token_for(tx, profile_id)
        if stored is None:
            return
        if rejected_token is None or ctx.box.decrypt(stored.token_enc) == rejected_token:
            store.delete_token(tx, profile_id)


async def fetch_token(settings: Settings, profile: AuthProfile, *, now: datetime) -> CachedToken:
    """Ask the token endpoint (client credentials grant); ``AuthFailed`` without any secret in it."""
    config = profile.config
    token_url = str(config["token_url"])
    host = host_of(token_url)
    body = prepare_token_request(
        "client_credentials", scope=config.get("scope") or None, audience=config.get("audience") or None
    )
    method = "client_secret_post" if config.get("client_auth") == "body" else "client_secret_basic"
    client = ClientAuth(config["client_id"], profile.secrets["client_secret"], method)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    url, headers, body = client.prepare("POST", token_url, headers, body)
    if url.startswith("http://") and not settings.allow_http:
        raise AuthFailed(f"token endpoint {host}: plain http:// is off (QHOOK_ALLOW_HTTP)")
    policy = AddressPolicy.from_settings(settings)
    try:
        # aiohttp connects to an IP literal without asking the resolver, so the guard is called here.
        policy.check_literal(URL(url).host or "")
    except SsrfBlocked as exc:
        raise TokenEndpointRefused(host, exc) from exc
    # The profile's CA and client certificate (mTLS) apply to its token endpoint as to its webhooks.
    tls = tls_context(
        settings,
        ca_cert=config.get("ca_cert"),
        client_cert=config.get("client_cert"),
        client_key=profile.secrets.get("client_key"),
    )
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy), ssl=tls)
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=TOKEN_TIMEOUT, trust_env=False) as session,
            session.post(url, data=body, headers=headers, allow_redirects=False) as response,
        ):
            text = await response.content.read(64 * 1024)
            status = response.status
    except aiohttp.ClientConnectorDNSError as exc:
        if isinstance(exc.os_error, SsrfBlocked):  # the name resolved to internal addresses only
            raise TokenEndpointRefused(host, exc.os_error) from exc
        raise AuthFailed(f"token endpoint {host} unreachable: {type(exc).__name__}") from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise AuthFailed(f"token endpoint {host} unreachable: {type(exc).__name__}") from exc
    data = _json(text)
    if status != 200:
        code = data.get("error") if isinstance(data.get("error"), str) else None
        detail = f" ({code})" if code else ""
        raise AuthFailed(f"token endpoint {host} answered {status}{detail}")
    if not isinstance(data.get("access_token"), str):
        what = "JSON without access_token" if data else "no JSON object"
        raise AuthFailed(f"token endpoint {host} answered 200 with {what}")
    token = OAuth2Token.from_dict(data)
    lifetime = DEFAULT_TOKEN_LIFETIME
    if _digits(str(token.get("expires_in", ""))):
        seconds = min(int(token["expires_in"]), int(MAX_TOKEN_LIFETIME.total_seconds()))
        lifetime = timedelta(seconds=seconds)
    return CachedToken(str(token["access_token"]), now + lifetime, now)


def _digits(text: str) -> bool:
    """Digits int() reads: str.isdigit also takes "²", on which int() fails."""
    return text.isascii() and text.isdigit()


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
