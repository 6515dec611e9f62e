"""Outgoing webhook HTTP: one shared aiohttp session, SSRF-guarded, TLS >= 1.2, no redirects.

``Sender.send`` never raises for network trouble; every failure becomes a ``SendOutcome`` with an
``error_kind`` (dns connect tls timeout http_status ssrf_blocked redirect). Response bodies are
read up to ``QHOOK_RESPONSE_BODY_LIMIT`` only; the rest is never downloaded and the outcome says
``response_truncated``. The size of a receiver's answer does not decide success: a 2xx with a
huge body is still delivered, so the sender never reports ``too_large`` itself. Once the status
line is in, the status decides: a body that cannot be read (broken compression, stalled until the
timeout) is described in ``response_body``, never a failed attempt that would send it again.
What the receiver sent is kept as text that every database stores (see ``storable``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import tempfile
import time
from dataclasses import dataclass, field

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from qhook.clock import utcnow
from qhook.delivery.ssrf import AddressPolicy, GuardedResolver, SsrfBlocked
from qhook.domain import credentials
from qhook.domain.inspector import INSPECT_PREFIX, is_own_inspector
from qhook.domain.json_text import without_nul
from qhook.domain.retry import parse_retry_after
from qhook.settings import Settings

CONNECT_TIMEOUT_S = 5.0
CONNECTION_LIMIT = 1000  # endpoints are capped by the worker; this only bounds sockets per process
OWN_INSPECTOR_CONNECTIONS = 20
TARGETS_CACHED = 4096  # parsed and checked target URLs kept per sender (bounded memory)
# The longest header line of an answer: aiohttp's 8,190 bytes failed a 2xx that carried a big
# Content-Security-Policy or cookie as a connection error, and the message was sent again.
MAX_HEADER_LINE = 64 * 1024


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    """Everything one POST needs, built before any I/O (see ``delivery.prepare``)."""

    url: str
    headers: dict[str, str]
    body: bytes
    timeout_s: float
    secret_header_names: frozenset[str] = frozenset()
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)  # per-profile CA / mTLS


@dataclass(frozen=True, slots=True)
class SendOutcome:
    status_code: int | None
    response_headers: dict[str, str]
    response_body: str
    duration_ms: int
    error_kind: str | None
    error: str | None
    retry_after_s: float | None
    response_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.error_kind is None and self.status_code is not None and 200 <= self.status_code < 300

    @property
    def location(self) -> str | None:
        return self.response_headers.get("Location") or self.response_headers.get("location")


def tls_context(
    settings: Settings,
    *,
    ca_cert: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> ssl.SSLContext:
    """Verification on, TLS 1.2 or newer, the system CAs plus QHOOK_CA_BUNDLE plus a profile's PEM CA."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.ca_bundle is not None:
        context.load_verify_locations(cafile=str(settings.ca_bundle))
    if ca_cert:
        context.load_verify_locations(cadata=ca_cert)
    if client_cert:
        _load_client_cert(context, client_cert, client_key)
    return context


def _load_client_cert(context: ssl.SSLContext, cert_pem: str, key_pem: str | None) -> None:
    # The ssl module reads certificate chains from files only; the key file lives for a moment, 0600.
    with tempfile.TemporaryDirectory(prefix="qhook-mtls-") as folder:
        cert_path = os.path.join(folder, "cert.pem")
        key_path = os.path.join(folder, "key.pem") if key_pem else None
        with open(os.open(cert_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
            handle.write(cert_pem)
        if key_path is not None and key_pem is not None:
            with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
                handle.write(key_pem)
        context.load_cert_chain(cert_path, key_path)


class Sender:
    """One per worker; holds the shared session, created on first use inside the running loop."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession | None = None) -> None:
        self._settings = settings
        self._policy = AddressPolicy.from_settings(settings)
        self._session = session
        self._owns_session = session is None
        self._tls = tls_context(settings)
        self._body_limit = settings.response_body_limit
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._profile_tls: dict[str, ssl.SSLContext] = {}
        self._own_session: aiohttp.ClientSession | None = None
        # url -> (parsed URL, refusal as (kind, message) or None, own inspector): the policy and
        # settings are fixed for the sender's life, so a URL needs parsing and checking once.
        self._targets: dict[str, tuple[URL, tuple[str, str] | None, bool]] = {}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self._policy),
                limit=CONNECTION_LIMIT,
                limit_per_host=0,
                ssl=self._tls,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=60, sock_connect=CONNECT_TIMEOUT_S),
                cookie_jar=aiohttp.DummyCookieJar(),  # receivers' cookies must not travel between deliveries
                trust_env=False,  # no proxy from the environment: it would bypass the SSRF resolver
                auto_decompress=True,
                max_line_size=MAX_HEADER_LINE,
                max_field_size=MAX_HEADER_LINE,
            )
        return self._session

    @property
    def own_inspector_session(self) -> aiohttp.ClientSession:
        """Unguarded, used only for this qhook's own inspector bins, which SSRF rules must not block."""
        if self._own_session is None:
            self._own_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=OWN_INSPECTOR_CONNECTIONS, ssl=self._tls),
                timeout=aiohttp.ClientTimeout(total=60, sock_connect=CONNECT_TIMEOUT_S),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                max_line_size=MAX_HEADER_LINE,
                max_field_size=MAX_HEADER_LINE,
            )
        return self._own_session

    def is_own_inspector(self, url: str) -> bool:
        # The substring test keeps the usual path to one cheap check.
        return INSPECT_PREFIX in url and is_own_inspector(url, self._settings)

    def profile_tls(
        self, key: str, *, ca_cert: str | None, client_cert: str | None, client_key: str | None
    ) -> ssl.SSLContext:
        """A cached TLS context for an auth profile's CA / client certificate (``key`` changes with them)."""
        digest = hashlib.sha256(
            "\0".join((key, ca_cert or "", client_cert or "", client_key or "")).encode()
        ).hexdigest()
        context = self._profile_tls.get(digest)
        if context is None:
            context = tls_context(
                self._settings, ca_cert=ca_cert, client_cert=client_cert, client_key=client_key
            )
            self._profile_tls[digest] = context
        return context

    def _timeout(self, total_s: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(total_s)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=total_s, sock_connect=min(CONNECT_TIMEOUT_S, total_s))
            self._timeouts[total_s] = timeout
        return timeout

    def _target(self, raw: str) -> tuple[URL, tuple[str, str] | None, bool]:
        found = self._targets.get(raw)
        if found is not None:
            return found
        url = URL(raw)
        own = self.is_own_inspector(raw)
        refusal: tuple[str, str] | None = None
        if not own:
            if url.scheme == "http" and not self._settings.allow_http:
                refusal = ("ssrf_blocked", "plain http:// targets are off (QHOOK_ALLOW_HTTP)")
            elif url.scheme not in ("http", "https") or not url.host:
                refusal = ("connect", f"not an http(s) URL: {url.scheme}://")
            else:
                try:
                    self._policy.check_literal(url.host)
                except SsrfBlocked as exc:
                    refusal = ("ssrf_blocked", str(exc))
        if len(self._targets) >= TARGETS_CACHED:
            self._targets.clear()
        found = self._targets[raw] = (url, refusal, own)
        return found

    async def send(self, request: OutgoingRequest) -> SendOutcome:
        """POST the request; every network failure comes back as an outcome, never as an exception."""
        started = time.perf_counter()
        try:
            url, refusal, own = self._target(request.url)
            if refusal is not None:
                return _failure(started, *refusal)
            session = self.own_inspector_session if own else self.session
            # qhook's own bin needs no credential, and whoever reads the bin must not see one: an auth
            # profile's header (any name) arrives "[redacted]", as the attempt log shows it.
            headers = (
                credentials.redacted(request.headers, request.secret_header_names) if own else request.headers
            )
            async with session.post(
                url,
                data=request.body,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout(request.timeout_s),
                ssl=request.ssl_context if request.ssl_context is not None else True,
            ) as response:
                try:
                    body, truncated = await self._read(response)
                except (aiohttp.ClientPayloadError, TimeoutError, asyncio.TimeoutError) as exc:  # noqa: UP041
                    # The status line is in, so the receiver has the message and the status decides;
                    # failing the attempt would send it again. What went wrong is what the Hub shows.
                    body, truncated = _unreadable(exc, request.timeout_s), True
                return self._outcome(started, response, body, truncated)
        except SsrfBlocked as exc:
            return _failure(started, "ssrf_blocked", str(exc))
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, SsrfBlocked):
                return _failure(started, "ssrf_blocked", str(exc.os_error))
            return _failure(started, "dns", f"{exc.host}: {exc.os_error.strerror or exc.os_error}")
        except aiohttp.ClientSSLError as exc:
            return _failure(started, "tls", _ssl_message(exc))
        except (TimeoutError, asyncio.TimeoutError):  # noqa: UP041 - aiohttp raises both spellings
            return _failure(started, "timeout", f"no complete answer within {request.timeout_s:g} s")
        except aiohttp.ClientConnectorError as exc:
            errno = exc.os_error.errno
            reason = os.strerror(errno) if errno else str(exc.os_error) or type(exc.os_error).__name__
            return _failure(started, "connect", f"{exc.host}:{exc.port}: {reason}")
        except ssl.SSLError as exc:
            return _failure(started, "tls", str(exc))
        except (aiohttp.ClientError, OSError) as exc:
            return _failure(started, "connect", f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))

    async def _read(self, response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        """At most ``limit`` bytes; one more tells whether the body was longer (never read further)."""
        limit = self._body_limit
        length = response.content_length
        if length is not None and length <= limit and "Content-Encoding" not in response.headers:
            # The usual short answer: one read, no loop (a compressed one may unpack far larger).
            return await response.read(), False
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = await response.content.read(limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
        return (data[:limit], True) if size > limit else (data, False)

    def _outcome(
        self, started: float, response: aiohttp.ClientResponse, body: bytes, truncated: bool
    ) -> SendOutcome:
        status = response.status
        headers = _headers(response.headers)
        retry_after = response.headers.get("Retry-After")
        kind: str | None = None
        error: str | None = None
        if 300 <= status < 400:
            kind = "redirect"
            location = response.headers.get("Location")
            error = f"redirect {status} to {location}" if location else f"redirect {status}"
        elif not 200 <= status < 300:
            kind = "http_status"
            error = storable(f"HTTP {status} {response.reason or ''}".rstrip())
        return SendOutcome(
            status_code=status,
            response_headers=headers,
            response_body=storable(_text_of(body, response.charset)),
            duration_ms=_elapsed_ms(started),
            error_kind=kind,
            error=error,
            retry_after_s=parse_retry_after(retry_after, utcnow()) if retry_after else None,
            response_truncated=truncated,
        )

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None
        if self._own_session is not None:
            await self._own_session.close()
        self._own_session = None


def _headers(raw: CIMultiDictProxy[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw.items():
        headers[name] = f"{headers[name]}, {storable(value)}" if name in headers else storable(value)
    return headers


def storable(raw: str) -> str:
    """Text as every database stores it, or the outcome's write failed and the delivery was sent
    again when its lease ran out, every time: aiohttp reads header bytes that are not UTF-8 (Latin-1
    from older servers: "caf\xe9") as lone surrogates, which no UTF-8 encoder takes; they are read
    as Latin-1 here. PostgreSQL's text cannot hold NUL: it becomes U+FFFD."""
    if raw.isascii() and "\x00" not in raw:
        return raw
    try:
        raw.encode()
    except UnicodeEncodeError:
        try:
            raw = raw.encode("utf-8", "surrogateescape").decode("latin-1")
        except UnicodeEncodeError:  # a surrogate no decoder made: nothing to recover
            raw = raw.encode("utf-8", "replace").decode()
    return without_nul(raw)


def _text_of(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know (the answer is still an answer)
        return body.decode("utf-8", errors="replace")


def _unreadable(exc: Exception, timeout_s: float) -> bytes:
    if isinstance(exc, aiohttp.ClientPayloadError):
        why = str(exc) or type(exc).__name__
    else:
        why = f"it did not arrive within {timeout_s:g} s"
    return f"[qhook could not read the answer's body: {why}]".encode()


def _ssl_message(exc: aiohttp.ClientSSLError) -> str:
    cause = exc.os_error
    if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_message:
        return f"certificate verify failed: {cause.verify_message}"
    return str(cause) or str(exc)


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _failure(started: float, kind: str, error: str) -> SendOutcome:
    return SendOutcome(
        status_code=None,
        response_headers={},
        response_body="",
        duration_ms=_elapsed_ms(started),
        error_kind=kind,
        error=error,
        retry_after_s=None,
    )
