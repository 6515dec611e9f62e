"""Error reports reach a real SMTP server (aiosmtpd), at most one digest per endpoint per interval."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.smtp import AuthResult

from qhook.clock import utcnow
from qhook.context import AppContext, open_context
from qhook.delivery import mailer
from qhook.settings import Settings
from qhook.store import error_reports
from tests.support.delivery import delivery, enqueue, make_signal, receiver, running_worker, until
from tests.support.smtp import smtp_server


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append(message_from_bytes(envelope.content))  # type: ignore[attr-defined]
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    with smtp_server(inbox) as port:
        yield inbox, port


@pytest.fixture
def mail_ctx(settings: Settings, smtp: tuple[Inbox, int]) -> Iterator[AppContext]:
    configured = settings.model_copy(
        update={"smtp_url": f"smtp://127.0.0.1:{smtp[1]}", "error_mail_interval": 3600}
    )
    context = open_context(configured)
    yield context
    context.db.dispose()


async def test_failed_deliveries_mail_one_digest_per_interval(
    mail_ctx: AppContext, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp

    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=404)

    async with receiver(gone) as rx:
        signal_id = make_signal(mail_ctx, rx.url, error_email="integrations@example.com")
        ids = enqueue(mail_ctx, signal_id, rx.url, ["{}", "{}"])
        async with running_worker(mail_ctx) as worker:
            await until(lambda: all(delivery(mail_ctx, i).status == "failed" for i in ids))
            await until(lambda: inbox.messages, timeout=5)
            [late] = enqueue(mail_ctx, signal_id, rx.url, ["{}"])
            worker.wake()
            await until(lambda: delivery(mail_ctx, late).status == "failed")
            await asyncio.sleep(1.0)
    [message] = inbox.messages  # the third failure waits for the next interval
    assert message["To"] == "integrations@example.com"
    assert "failed" in message["Subject"] and "127.0.0.1" in message["Subject"]
    text = str(message.get_payload())
    assert text.count("failed for good") == 2 and "check the URL" in text
    with mail_ctx.db.reading() as tx:
        unsent = error_reports.unsent(tx)
    assert [r.delivery_id for r in unsent] == [late]


async def test_no_error_email_no_report(mail_ctx: AppContext, smtp: tuple[Inbox, int]) -> None:
    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=404)

    async with receiver(gone) as rx:
        signal_id = make_signal(mail_ctx, rx.url)
        [delivery_id] = enqueue(mail_ctx, signal_id, rx.url, ["{}"])
        async with running_worker(mail_ctx):
            await until(lambda: delivery(mail_ctx, delivery_id).status == "failed")
            await asyncio.sleep(0.5)
    assert smtp[0].messages == []
    with mail_ctx.db.reading() as tx:
        assert error_reports.unsent(tx) == []


class RefusesOne(Inbox):
    async def handle_RCPT(
        self, server: object, session: object, envelope: Any, address: str, options: object
    ) -> str:
        if address == "gone@example.com":
            return "550 5.1.1 no such mailbox"
        if address == "later@example.com":
            return "450 4.2.0 greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def test_an_address_refused_for_good_does_not_hold_up_the_other_digests(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the first refused digest ended every round, and the digests after it never went."""
    inbox = RefusesOne()
    with smtp_server(inbox) as port:
        ctx = open_context(settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{port}"}))
        try:
            now = utcnow()
            with ctx.db.transaction() as tx:
                for origin, email in (
                    ("https://a.example.com:443", "gone@example.com"),
                    ("https://b.example.com:443", "ops@example.com"),
                    ("https://c.example.com:443", "later@example.com"),
                ):
                    error_reports.add(
                        tx,
                        endpoint=origin,
                        email=email,
                        kind="delivery_failed",
                        delivery_id=None,
                        text="HTTP 500",
                        now=now,
                    )
            assert mailer.send_due_digests(ctx, now) == 1
            assert [m["To"] for m in inbox.messages] == ["ops@example.com"]
            with ctx.db.reading() as tx:
                # The one refused for good is not tried every round; the greylisted one waits.
                assert [r.email for r in error_reports.unsent(tx)] == ["later@example.com"]
        finally:
            ctx.db.dispose()
    [line] = [r for r in caplog.records if r.getMessage().startswith("error digest dropped")]
    assert "gone@example.com: SMTP 550: 5.1.1 no such mailbox" in line.getMessage()
    assert line.__dict__["endpoint"] == "https://a.example.com:443"


async def test_the_mailer_waits_longer_after_each_failed_round(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong SMTP password was tried every round (2 s), about 30 logins a minute against the mail
    server; now one try, then 10 s, 20 s, ... up to 10 minutes, with one line saying why."""
    logins: list[bytes] = []

    def count_and_refuse(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        logins.append(data.login)
        return AuthResult(success=False, handled=False)

    with smtp_server(Inbox(), authenticator=count_and_refuse, auth_require_tls=False) as port:
        ctx = open_context(settings.model_copy(update={"smtp_url": f"smtp://qhook:wrong@127.0.0.1:{port}"}))
        try:
            with ctx.db.transaction() as tx:
                error_reports.add(
                    tx,
                    endpoint="https://a.example.com:443",
                    email="ops@example.com",
                    kind="delivery_failed",
                    delivery_id=None,
                    text="HTTP 500",
                    now=utcnow(),
                )
            stop = asyncio.Event()
            task = asyncio.create_task(mailer.run_mailer(ctx, stop, every_s=0.1))
            await asyncio.sleep(2.0)
            stop.set()
            await task
        finally:
            ctx.db.dispose()
    # One round in 2 s, where every 0.1 s was asked for (smtplib tries PLAIN, then LOGIN).
    assert logins == [b"qhook", b"qhook"]
    [line] = [r.getMessage() for r in caplog.records if "not sent" in r.getMessage()]
    assert line == (
        "error digests not sent: SMTP 535: 5.7.8 Authentication credentials invalid "
        "(check QHOOK_SMTP_URL and the mail server); next try in 10 s"
    )


def test_a_digest_links_to_the_hub_hides_url_tokens_and_says_when_the_endpoint_is_back(
    settings: Settings, smtp: tuple[Inbox, int]
) -> None:
    """The digest said only "the Integration Hub of your qhook", copied ?token=... from the URL
    into the mail, had no Date or Message-ID (remote relays add none; spam filters score that),
    and a circuit that had closed again by mailing time was still reported as "stopped answering"."""
    from qhook.delivery.worker import _open_circuit
    from qhook.store import endpoints as endpoint_store

    inbox, port = smtp
    origin = "https://erp.example.com:443"
    ctx = open_context(
        settings.model_copy(
            update={"smtp_url": f"smtp://127.0.0.1:{port}", "public_url": "https://qhook.example.com/"}
        )
    )
    try:
        now = utcnow()
        with ctx.db.transaction() as tx:
            _open_circuit(tx, now, origin=origin, detail="10 of 10 attempts failed", email="ops@example.com")
            error_reports.add(
                tx,
                endpoint=origin,
                email="ops@example.com",
                kind="delivery_failed",
                delivery_id=7,
                text="Delivery msg_1 to https://erp.example.com/in?... failed for good (HTTP 500).",
                now=now,
            )
            endpoint_store.close_circuit(tx, origin, now, "probe succeeded")
        assert mailer.send_due_digests(ctx, now) == 1
    finally:
        ctx.db.dispose()
    [message] = inbox.messages
    assert message["Date"] and message["Message-ID"] and message["Auto-Submitted"] == "auto-generated"
    text = message.get_payload(decode=True).decode()
    assert (
        "https://qhook.example.com/ui/hub?status=failed&endpoint=https%3A%2F%2Ferp.example.com%3A443" in text
    )
    assert "https://qhook.example.com/ui/endpoints" in text
    assert "Since then the circuit closed again (a probe succeeded)" in text


def test_a_failed_delivery_report_leaves_the_query_out() -> None:
    from types import SimpleNamespace

    from qhook.delivery.worker import _failure_text

    delivery = SimpleNamespace(webhook_id="msg_1", url="https://erp.example.com/in?token=SECRETQ&x=1")
    result = SimpleNamespace(
        status_code=500, error_kind="http_status", attempt=SimpleNamespace(number=3), hint=""
    )
    text = _failure_text(delivery, result)  # type: ignore[arg-type]
    assert "SECRETQ" not in text and "https://erp.example.com/in?..." in text
