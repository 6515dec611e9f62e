"""Mail over TLS to a real SMTP server (aiosmtpd): the certificate and name are checked like the
webhooks' (system CAs plus QHOOK_CA_BUNDLE), STARTTLS is used whenever offered, and the password
goes only over an encrypted connection. Before, smtps:// and STARTTLS accepted any certificate."""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from qhook.delivery import mailer
from qhook.settings import Settings
from tests.conftest import TEST_SECRET_KEY
from tests.support.certs import make_pki
from tests.support.smtp import smtp_server


class Inbox:
    def __init__(self) -> None:
        self.arrived: list[tuple[bool, str | None, bytes]] = []  # (over TLS, logged-in user, content)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        user = session.auth_data.login.decode() if session.auth_data else None
        over_tls = server.transport.get_extra_info("ssl_object") is not None
        self.arrived.append((over_tls, user, envelope.content))
        return "250 OK"


def only_mailer(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"mailer", b"s3cret-smtp")
    return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


def settings(tmp_path: Path, smtp_url: str, ca: Path | None = None) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        secret_key=TEST_SECRET_KEY,  # type: ignore[arg-type]
        smtp_url=smtp_url,
        ca_bundle=ca,
    )


def message() -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "qhook@example.com", "ops@example.com", "test"
    mail.set_content("hello")
    return mail


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def test_smtps_checks_the_certificate(tmp_path: Path) -> None:
    ca, cert, key = make_pki(("127.0.0.1",)).write(tmp_path / "pki")
    inbox = Inbox()
    # aiosmtpd counts only STARTTLS as TLS for AUTH; this connection is TLS from the start.
    tls = {"ssl_context": server_context(cert, key), "authenticator": only_mailer, "auth_require_tls": False}
    with smtp_server(inbox, **tls) as port:
        url = f"smtps://mailer:s3cret-smtp@127.0.0.1:{port}"
        with pytest.raises(ssl.SSLCertVerificationError):
            mailer.send_message(settings(tmp_path, url), message())  # a CA the system does not know
        assert inbox.arrived == []
        mailer.send_message(settings(tmp_path, url, ca=ca), message())
    assert [(tls, user) for tls, user, _ in inbox.arrived] == [(True, "mailer")]


def test_starttls_is_used_when_offered_and_checked(tmp_path: Path) -> None:
    ca, cert, key = make_pki(("127.0.0.1",)).write(tmp_path / "pki")
    inbox = Inbox()
    options = {"tls_context": server_context(cert, key), "authenticator": only_mailer}
    with smtp_server(inbox, **options) as port:
        for scheme in ("smtp", "smtp+starttls"):
            url = f"{scheme}://mailer:s3cret-smtp@127.0.0.1:{port}"
            with pytest.raises(ssl.SSLCertVerificationError):
                mailer.send_message(settings(tmp_path, url), message())
            mailer.send_message(settings(tmp_path, url, ca=ca), message())
    # smtp:// too went over TLS, because the server offered it; the password only after it.
    assert [(tls, user) for tls, user, _ in inbox.arrived] == [(True, "mailer"), (True, "mailer")]


def test_plain_smtp_without_starttls_still_works_without_a_password(tmp_path: Path) -> None:
    inbox = Inbox()
    with smtp_server(inbox) as port:
        mailer.send_message(settings(tmp_path, f"smtp://127.0.0.1:{port}"), message())
    assert [(tls, user) for tls, user, _ in inbox.arrived] == [(False, None)]


def test_a_password_never_goes_unencrypted_off_this_machine() -> None:
    assert mailer.may_log_in(encrypted=True, host="mail.example.com")
    assert not mailer.may_log_in(encrypted=False, host="mail.example.com")
    assert not mailer.may_log_in(encrypted=False, host="10.1.2.3")
    assert mailer.may_log_in(encrypted=False, host="127.0.0.1")  # a relay on this machine
    assert mailer.may_log_in(encrypted=False, host="::1")
    assert mailer.may_log_in(encrypted=False, host="localhost")
