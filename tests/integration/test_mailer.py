"""Error reports reach a real SMTP server (aiosmtpd), at most one digest per endpoint per interval."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message

import pytest
from aiohttp import web

from qhook.context import AppContext, open_context
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
