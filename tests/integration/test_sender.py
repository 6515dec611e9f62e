"""The sender against real aiohttp.web servers on 127.0.0.1 (plain and TLS)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from aiohttp import web

from qhook.clock import utcnow
from qhook.delivery.sender import OutgoingRequest, Sender
from qhook.domain.hints import hint_for, tls_problem
from qhook.settings import Settings
from tests.support.certs import make_pki
from tests.support.pg import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Receiver:
    """A real HTTP server that records what reached it."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.hits: list[tuple[str, dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    def route(self, path: str, handler: Handler) -> None:
        async def recording(request: web.Request) -> web.StreamResponse:
            self.hits.append((request.path, dict(request.headers), await request.read()))
            return await handler(request)

        self.app.router.add_route("*", path, recording)

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def url(self, path: str, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "var",
        "allow_http": True,
        "allowed_target_networks": "127.0.0.0/8,::1/128",
        "response_body_limit": 1024,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def post(url: str, timeout_s: float = 5.0, body: bytes = b'{"a":1}') -> OutgoingRequest:
    return OutgoingRequest(
        url=url,
        headers={"Content-Type": "application/json", "User-Agent": "qhook/test", "X-Api-Key": "s3cret"},
        body=body,
        timeout_s=timeout_s,
        secret_header_names=frozenset({"x-api-key"}),
    )


async def _ok(_: web.Request) -> web.Response:
    return web.json_response({"received": True})


async def _error(_: web.Request) -> web.Response:
    return web.Response(status=500, text="boom")


async def _throttled(_: web.Request) -> web.Response:
    return web.Response(status=429, headers={"Retry-After": "120"}, text="slow down")


async def _throttled_date(_: web.Request) -> web.Response:
    when = format_datetime(utcnow() + timedelta(seconds=600), usegmt=True)
    return web.Response(status=503, headers={"Retry-After": when})


async def _not_found(_: web.Request) -> web.Response:
    return web.Response(status=404, text="no")


async def _slow(_: web.Request) -> web.Response:
    await asyncio.sleep(3)
    return web.Response(text="late")


async def _huge(_: web.Request) -> web.Response:
    return web.Response(body=b"x" * (1024 * 1024), content_type="text/plain")


async def _redirect(_: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/elsewhere"})


async def _hang_up(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.close()  # took the request, closes without a word
    await asyncio.sleep(1)
    return web.Response(text="never sent")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    server.route("/ok", _ok)
    server.route("/error", _error)
    server.route("/throttled", _throttled)
    server.route("/throttled-date", _throttled_date)
    server.route("/missing", _not_found)
    server.route("/slow", _slow)
    server.route("/huge", _huge)
    server.route("/redirect", _redirect)
    server.route("/elsewhere", _ok)
    server.route("/hang-up", _hang_up)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def sender(tmp_path: Path) -> AsyncIterator[Sender]:
    instance = Sender(make_settings(tmp_path))
    yield instance
    await instance.close()


async def test_success_sends_body_and_headers(receiver: Receiver, sender: Sender) -> None:
    outcome = await sender.send(post(receiver.url("/ok")))
    assert outcome.ok and outcome.status_code == 200 and outcome.error_kind is None
    assert outcome.response_body == '{"received": true}'
    assert outcome.response_headers["Content-Type"].startswith("application/json")
    assert not outcome.response_truncated
    path, headers, body = receiver.hits[0]
    assert (path, body) == ("/ok", b'{"a":1}')
    assert headers["User-Agent"] == "qhook/test" and headers["X-Api-Key"] == "s3cret"
    assert "Cookie" not in headers


async def test_many_concurrent_sends_share_one_session(receiver: Receiver, sender: Sender) -> None:
    outcomes = await asyncio.gather(*(sender.send(post(receiver.url("/ok"))) for _ in range(50)))
    assert all(o.ok for o in outcomes)
    assert len(receiver.hits) == 50


async def test_server_error(receiver: Receiver, sender: Sender) -> None:
    outcome = await sender.send(post(receiver.url("/error")))
    assert (outcome.status_code, outcome.error_kind) == (500, "http_status")
    assert outcome.error == "HTTP 500 Internal Server Error" and outcome.response_body == "boom"


async def test_429_retry_after_seconds(receiver: Receiver, sender: Sender) -> None:
    outcome = await sender.send(post(receiver.url("/throttled")))
    assert (outcome.status_code, outcome.error_kind, outcome.retry_after_s) == (429, "http_status", 120)


async def test_503_retry_after_http_date(receiver: Receiver, sender: Sender) -> None:
    outcome = await sender.send(post(receiver.url("/throttled-date")))
    assert outcome.status_code == 503
    assert outcome.retry_after_s is not None and 590 <= outcome.retry_after_s <= 600


async def test_404(receiver: Receiver, sender: Sender) -> None:
    outcome = await sender.send(post(receiver.url("/missing")))
    assert (outcome.status_code, outcome.error_kind, outcome.retry_after_s) == (404, "http_status", None)


async def test_timeout(receiver: Receiver, sender: Sender) -> None:
    outcome = await sender.send(post(receiver.url("/slow"), timeout_s=0.5))
    assert outcome.error_kind == "timeout" and outcome.status_code is None
    assert 400 <= outcome.duration_ms < 2500
    assert outcome.error == "no complete answer within 0.5 s"


async def test_connection_refused(sender: Sender) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = await sender.send(post(f"http://127.0.0.1:{port}/x"))
    assert outcome.error_kind == "connect" and outcome.status_code is None
    assert f"127.0.0.1:{port}" in (outcome.error or "")
    assert "refused" in (outcome.error or "").lower()


async def test_dns_failure(sender: Sender) -> None:
    outcome = await sender.send(post("http://no-such-host.invalid/x"))
    assert outcome.error_kind == "dns" and "no-such-host.invalid" in (outcome.error or "")


async def test_oversized_response_is_truncated_not_failed(receiver: Receiver, sender: Sender) -> None:
    outcome = await sender.send(post(receiver.url("/huge")))
    assert outcome.ok and outcome.response_truncated
    assert outcome.response_body == "x" * 1024
    # The connection is still usable for the next request.
    assert (await sender.send(post(receiver.url("/ok")))).ok


async def test_redirect_is_not_followed(receiver: Receiver, sender: Sender) -> None:
    outcome = await sender.send(post(receiver.url("/redirect")))
    assert (outcome.status_code, outcome.error_kind) == (302, "redirect")
    assert outcome.location == "/elsewhere" and outcome.error == "redirect 302 to /elsewhere"
    assert [hit[0] for hit in receiver.hits] == ["/redirect"]


async def test_ssrf_blocks_loopback_and_nothing_arrives(receiver: Receiver, tmp_path: Path) -> None:
    sender = Sender(make_settings(tmp_path, allowed_target_networks=""))
    try:
        literal = await sender.send(post(receiver.url("/ok")))
        named = await sender.send(post(receiver.url("/ok", host="localhost")))
    finally:
        await sender.close()
    assert literal.error_kind == "ssrf_blocked" and "127.0.0.1 is loopback" in (literal.error or "")
    assert named.error_kind == "ssrf_blocked" and "localhost is refused" in (named.error or "")
    assert receiver.hits == []


async def test_plain_http_refused_unless_allowed(receiver: Receiver, tmp_path: Path) -> None:
    sender = Sender(make_settings(tmp_path, allow_http=False))
    try:
        outcome = await sender.send(post(receiver.url("/ok")))
    finally:
        await sender.close()
    assert outcome.error_kind == "ssrf_blocked" and "QHOOK_ALLOW_HTTP" in (outcome.error or "")
    assert receiver.hits == []


def _server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def test_tls_unknown_ca_fails_then_passes_with_ca_bundle(tmp_path: Path) -> None:
    ca, cert, key = make_pki().write(tmp_path / "pki")
    server = Receiver()
    server.route("/ok", _ok)
    await server.start(_server_tls(cert, key))
    untrusting = Sender(make_settings(tmp_path))
    trusting = Sender(make_settings(tmp_path, ca_bundle=ca))
    try:
        refused = await untrusting.send(post(server.url("/ok", scheme="https", host="localhost")))
        accepted = await trusting.send(post(server.url("/ok", scheme="https", host="localhost")))
        by_ip = await trusting.send(post(server.url("/ok", scheme="https")))
    finally:
        await untrusting.close()
        await trusting.close()
        await server.stop()
    assert refused.error_kind == "tls", refused
    assert tls_problem(refused.error) == "unknown_ca"
    hint = hint_for(
        url=server.url("/ok", scheme="https"), status_code=None, error_kind="tls", error=refused.error
    )
    assert hint is not None and "QHOOK_CA_BUNDLE" in hint
    assert accepted.ok, accepted
    assert by_ip.ok, by_ip
    assert len(server.hits) == 2


async def test_tls_hostname_mismatch(tmp_path: Path) -> None:
    ca, cert, key = make_pki(("erp.example.com",)).write(tmp_path / "pki")
    server = Receiver()
    server.route("/ok", _ok)
    await server.start(_server_tls(cert, key))
    sender = Sender(make_settings(tmp_path, ca_bundle=ca))
    try:
        outcome = await sender.send(post(server.url("/ok", scheme="https", host="localhost")))
    finally:
        await sender.close()
        await server.stop()
    assert outcome.error_kind == "tls" and tls_problem(outcome.error) == "hostname", outcome
    assert server.hits == []


async def test_profile_ca_context(tmp_path: Path) -> None:
    pki = make_pki()
    _, cert, key = pki.write(tmp_path / "pki")
    server = Receiver()
    server.route("/ok", _ok)
    await server.start(_server_tls(cert, key))
    sender = Sender(make_settings(tmp_path))
    try:
        context = sender.profile_tls("profile-1", ca_cert=pki.ca_pem, client_cert=None, client_key=None)
        assert (
            sender.profile_tls("profile-1", ca_cert=pki.ca_pem, client_cert=None, client_key=None) is context
        )
        request = post(server.url("/ok", scheme="https", host="localhost"))
        with_ca = OutgoingRequest(**{**_fields(request), "ssl_context": context})
        outcome = await sender.send(with_ca)
    finally:
        await sender.close()
        await server.stop()
    assert outcome.ok, outcome


async def test_mutual_tls_client_certificate(tmp_path: Path) -> None:
    server_pki = make_pki()
    client_pki = make_pki(("qhook-client",), client=True)
    _, cert, key = server_pki.write(tmp_path / "server")
    client_ca, _, _ = client_pki.write(tmp_path / "client")
    server_context = _server_tls(cert, key)
    server_context.verify_mode = ssl.CERT_REQUIRED
    server_context.load_verify_locations(client_ca)
    server = Receiver()
    server.route("/ok", _ok)
    await server.start(server_context)
    sender = Sender(make_settings(tmp_path))
    url = server.url("/ok", scheme="https", host="localhost")
    try:
        without = sender.profile_tls("p", ca_cert=server_pki.ca_pem, client_cert=None, client_key=None)
        refused = await sender.send(OutgoingRequest(**{**_fields(post(url)), "ssl_context": without}))
        with_cert = sender.profile_tls(
            "p", ca_cert=server_pki.ca_pem, client_cert=client_pki.cert_pem, client_key=client_pki.key_pem
        )
        accepted = await sender.send(OutgoingRequest(**{**_fields(post(url)), "ssl_context": with_cert}))
    finally:
        await sender.close()
        await server.stop()
    assert not refused.ok and refused.error_kind in ("tls", "connect"), refused
    assert accepted.ok, accepted


async def test_tls_1_1_only_server_is_refused(tmp_path: Path) -> None:
    # A blocking TLS server (as nginx would) answers the handshake with a protocol_version alert;
    # asyncio's server would just drop the connection instead.
    ca, cert, key = make_pki().write(tmp_path / "pki")
    context = _server_tls(cert, key)
    with warnings.catch_warnings():  # the test server deliberately speaks a deprecated protocol
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    handshakes: list[str] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_one() -> None:
        conn, _ = listener.accept()
        try:
            context.wrap_socket(conn, server_side=True).close()
            handshakes.append("completed")
        except ssl.SSLError as exc:
            handshakes.append(exc.reason or "failed")
        finally:
            conn.close()

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    sender = Sender(make_settings(tmp_path, ca_bundle=ca))
    try:
        outcome = await sender.send(post(f"https://127.0.0.1:{port}/ok"))
    finally:
        await sender.close()
        thread.join(5)
        listener.close()
    assert outcome.error_kind == "tls", outcome
    assert tls_problem(outcome.error) == "protocol", outcome.error
    assert handshakes == ["UNSUPPORTED_PROTOCOL"]


def _fields(request: OutgoingRequest) -> dict[str, object]:
    return {name: getattr(request, name) for name in OutgoingRequest.__slots__}  # type: ignore[attr-defined]


async def _raw_server(answer: bytes, *, stall_s: float = 0.0) -> tuple[asyncio.Server, str]:
    """A socket server writing ``answer`` as it is (aiohttp.web would not send these)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(stall_s)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"


@pytest.mark.parametrize(
    ("answer", "stall_s", "body"),
    [
        # A charset Python does not know: read as UTF-8 (it was a LookupError out of send()).
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=bogus-9\r\nContent-Length: 2\r\n\r\nok",
            0,
            "ok",
        ),
        # gzip announced, something else sent.
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!",
            0,
            "[qhook could not read the answer's body: ",
        ),
        # A header line longer than aiohttp's default 8,190 bytes (a big policy or cookie).
        (
            b"HTTP/1.1 200 OK\r\nContent-Security-Policy: "
            + b"x" * 20_000
            + b"\r\nContent-Length: 2\r\n\r\nok",
            0,
            "ok",
        ),
        # The status line and headers, then nothing until the timeout.
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
            3,
            "[qhook could not read the answer's body: it did not arrive within 0.5 s]",
        ),
    ],
    ids=["unknown-charset", "broken-gzip", "long-header", "stalled-body"],
)
async def test_an_awkward_2xx_answer_is_still_a_success(
    sender: Sender, answer: bytes, stall_s: float, body: str
) -> None:
    """The receiver has the message once its status line is in; failing the attempt over what
    follows (a long header, the body) would send the message again."""
    server, url = await _raw_server(answer, stall_s=stall_s)
    try:
        outcome = await sender.send(post(url, timeout_s=0.5))
    finally:
        server.close()
    assert outcome.ok and outcome.status_code == 200 and outcome.error_kind is None, outcome
    assert outcome.response_body.startswith(body)


async def test_a_receiver_that_hangs_up_is_told_apart_from_one_that_refuses(
    receiver: Receiver, sender: Sender
) -> None:
    """The hint said "Nothing accepted the connection" for a receiver that took the request and
    closed the connection: the operator looked at firewalls instead of the receiver's logs."""
    outcome = await sender.send(post(receiver.url("/hang-up")))
    assert outcome.error_kind == "connect" and outcome.status_code is None
    hint = hint_for(url=receiver.url("/hang-up"), status_code=None, error_kind="connect", error=outcome.error)
    assert hint is not None and "accepted the connection and closed it before answering" in hint
    assert "a second time with the same webhook-id" in hint  # it may have taken the request
    nobody = f"http://127.0.0.1:{free_port()}/x"
    refused = await sender.send(post(nobody))
    hint = hint_for(url=nobody, status_code=None, error_kind="connect", error=refused.error)
    assert hint is not None and hint.startswith("Nothing accepted the connection")


async def test_an_answer_that_is_not_http_and_https_to_a_plain_port_get_their_own_hints(
    receiver: Receiver, sender: Sender
) -> None:
    """A receiver port answering garbage was "Nothing accepted the connection", and https:// to a
    plain-HTTP port was "only offers TLS versions older than 1.2": both sent operators to the
    wrong fix."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        url = f"http://127.0.0.1:{port}/b"
        outcome = await sender.send(post(url))
    finally:
        server.close()
        await server.wait_closed()
    hint = hint_for(url=url, status_code=None, error_kind=outcome.error_kind, error=outcome.error)
    assert hint is not None and hint.startswith(
        f"127.0.0.1:{port} accepted the connection, but its answer was not HTTP"
    )

    plain = receiver.url("/ok").replace("http://", "https://")
    tls = await sender.send(post(plain))
    assert tls.error_kind == "tls"
    hint = hint_for(url=plain, status_code=None, error_kind="tls", error=tls.error)
    assert hint is not None and "did not answer with TLS: the port most likely serves plain http://" in hint
    assert receiver.hits == []  # nothing was delivered either way
