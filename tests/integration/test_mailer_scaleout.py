"""Error-report digests with several workers on PostgreSQL: each digest is mailed once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest

from qhook.context import AppContext, open_context
from qhook.delivery import mailer
from qhook.settings import Settings
from qhook.store import error_reports
from tests.conftest import TEST_SECRET_KEY, fresh_postgres_url
from tests.support import pg
from tests.support.delivery import until
from tests.support.smtp import report, smtp_server

INTERVAL_S = 3


class SlowInbox:
    """An SMTP server that takes its time, so two mailers surely overlap."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        await asyncio.sleep(0.3)
        self.messages.append(message_from_bytes(envelope.content))  # type: ignore[attr-defined]
        return "250 OK"

    def per_endpoint(self) -> Counter[str]:
        return Counter(str(m["Subject"]).split(": ")[1] for m in self.messages)


@pytest.fixture
def smtp() -> Iterator[tuple[SlowInbox, int]]:
    inbox = SlowInbox()
    with smtp_server(inbox) as port:
        yield inbox, port


@pytest.fixture
def two_workers(
    pg_server: pg.PgServer, tmp_path: Path, smtp: tuple[SlowInbox, int]
) -> Iterator[list[AppContext]]:
    """Two contexts (own engines, as two processes have) on one PostgreSQL database."""
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=fresh_postgres_url(pg_server),
        secret_key=TEST_SECRET_KEY,  # type: ignore[arg-type]
        smtp_url=f"smtp://127.0.0.1:{smtp[1]}",
        error_mail_interval=INTERVAL_S,
    )
    contexts = [open_context(settings), open_context(settings)]
    yield contexts
    for context in contexts:
        context.db.dispose()


@pytest.mark.postgres
async def test_two_mailers_send_one_digest_per_endpoint_per_interval(
    two_workers: list[AppContext], smtp: tuple[SlowInbox, int]
) -> None:
    inbox, _ = smtp
    first, second = two_workers
    erp, lims = "https://erp.example.com:443", "https://lims.example.com:443"
    for n in range(3):
        report(first, erp, f"erp failure {n}")
    report(second, lims, "lims failure")
    stop = asyncio.Event()
    loops = [asyncio.create_task(mailer.run_mailer(ctx, stop, every_s=0.05)) for ctx in two_workers]
    try:
        await until(lambda: len(inbox.messages) >= 2, timeout=10)
        report(second, erp, "erp failure late")  # within the interval: waits for the next digest
        await asyncio.sleep(1.0)
        assert inbox.per_endpoint() == {erp: 1, lims: 1}
        await until(lambda: inbox.per_endpoint()[erp] == 2, timeout=INTERVAL_S + 5)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*loops)
    assert inbox.per_endpoint() == {erp: 2, lims: 1}
    first_erp, late_erp = [str(m.get_payload()) for m in inbox.messages if erp in str(m["Subject"])]
    assert all(f"erp failure {n}" in first_erp for n in range(3)) and "late" not in first_erp
    assert "erp failure late" in late_erp and "failure 0" not in late_erp
    with first.db.reading() as tx:
        assert error_reports.unsent(tx) == []
