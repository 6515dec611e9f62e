"""E-mail signals: rendered and queued with their event, mailed to a real SMTP server (aiosmtpd), retried."""

from __future__ import annotations

import json
import smtplib
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.smtp import AuthResult

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.delivery import email_signals
from qhook.services import results
from qhook.settings import Settings
from qhook.store import email_outbox
from qhook.store import events as event_store
from qhook.store.email_outbox import QueuedEmail
from tests.conftest import TEST_SECRET_KEY, auth
from tests.support.delivery import running_worker, until
from tests.support.pg import free_port
from tests.support.smtp import smtp_server
from tests.support.workflows import make_set, make_workflow


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    with smtp_server(inbox) as port:
        yield inbox, port


@pytest.fixture
def settings(tmp_path: Path, db_url: str, smtp: tuple[Inbox, int]) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        database_url=db_url,
        secret_key=TEST_SECRET_KEY,  # type: ignore[arg-type]
        api_rate_limit="100000/minute",
        allow_http=True,
        allowed_target_networks="127.0.0.0/8,::1/128",
        poll_interval_s=0.2,
        smtp_url=f"smtp://127.0.0.1:{smtp[1]}",
        smtp_from="qhook@example.com",
    )


SIGNAL = {
    "type": "email",
    "to": ["qa@example.com", "lab@example.com"],
    "subject": "Batch {{ batchnumber_ }} {{ action }}\nBcc: evil@example.com",
    "message": "Released by {{ actor }}: pH {{ ph_ }}",
}


def queued(ctx: AppContext) -> list[QueuedEmail]:
    with ctx.db.reading() as tx:
        return list(reversed(email_outbox.list_emails(tx)))


async def test_email_signal_is_queued_with_its_event_and_mailed(
    api: httpx.AsyncClient, ctx: AppContext, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    set_id = await make_set(api)
    workflow = await make_workflow(api, set_id, signals=[SIGNAL])
    assert workflow["signals"][0]["to"] == ["qa@example.com", "lab@example.com"]
    created = await api.post(
        f"/api/v1/sets/{set_id}/results", json={"values": {"batchnumber_": "B-7", "ph_": 6.5}}
    )
    assert created.status_code == 201, created.text
    [email] = queued(ctx)
    with ctx.db.reading() as tx:
        [event] = event_store.list_events(tx, result_id=created.json()["id"])
    assert (email.event_id, email.status, email.signal_id) == (
        event.id,
        "pending",
        workflow["signals"][0]["id"],
    )
    assert email.subject == "Batch B-7 new Bcc: evil@example.com"  # one line: nothing to inject
    assert email.body == "Released by alice: pH 6.5"
    assert event.evaluations[0]["fired"] is True

    assert email_signals.send_due_emails(ctx) == 1
    [(recipients, message)] = inbox.messages
    assert recipients == ["qa@example.com", "lab@example.com"]
    assert message["Subject"] == "Batch B-7 new Bcc: evil@example.com"
    assert message["From"] == "qhook@example.com" and message["Bcc"] is None
    assert message.get_payload().strip() == "Released by alice: pH 6.5"
    [sent] = queued(ctx)
    assert sent.status == "sent" and sent.attempt_count == 1 and sent.sent_at is not None
    assert email_signals.send_due_emails(ctx) == 0  # never twice


async def test_store_results_queues_one_email_per_event(
    api: httpx.AsyncClient, ctx: AppContext, smtp: tuple[Inbox, int]
) -> None:
    set_id = await make_set(api)
    await make_workflow(api, set_id, signals=[SIGNAL])
    response = await api.post(
        "/api/storeResults",
        data={"setId": str(set_id), "results": json.dumps([{"batchnumber_": "A"}, {"batchnumber_": "B"}])},
    )
    assert response.status_code == 200, response.text
    emails = queued(ctx)
    assert [e.subject.split(" Bcc")[0] for e in emails] == ["Batch A new", "Batch B new"]
    with ctx.db.reading() as tx:
        for email in emails:
            event = event_store.get_event(tx, email.event_id or 0)
            assert event is not None and event.result_id == email.result_id
    assert email_signals.send_due_emails(ctx) == 2
    assert len(smtp[0].messages) == 2


async def test_a_rolled_back_change_queues_no_email(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = await make_set(api)
    await make_workflow(api, set_id, signals=[SIGNAL])
    with pytest.raises(RuntimeError), ctx.db.transaction() as tx:
        results.create_result_tx(tx, ctx, set_id=set_id, values={"batchnumber_": "X"}, actor="t")
        assert len(email_outbox.list_emails(tx)) == 1
        raise RuntimeError("the change fails after its fan-out")
    assert queued(ctx) == []


async def test_smtp_trouble_is_retried_later(
    api: httpx.AsyncClient, ctx: AppContext, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    set_id = await make_set(api)
    await make_workflow(api, set_id, signals=[SIGNAL])
    await api.post(f"/api/v1/sets/{set_id}/results", json={"values": {"batchnumber_": "B-1"}})
    down = replace(
        ctx, settings=ctx.settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{free_port()}"})
    )
    now = utcnow()
    with pytest.raises(ConnectionRefusedError):  # the mailer loop waits longer before its next round
        email_signals.send_due_emails(down, now)
    [waiting] = queued(ctx)
    assert waiting.status == "pending" and waiting.attempt_count == 1
    assert waiting.last_error and "refused" in waiting.last_error.lower()
    assert waiting.next_attempt_at == now + timedelta(seconds=email_signals.RETRY_AFTER_S[0])
    assert email_signals.send_due_emails(ctx, now + timedelta(seconds=10)) == 0  # not due yet
    assert email_signals.send_due_emails(ctx, now + timedelta(seconds=31)) == 1
    assert len(inbox.messages) == 1
    assert queued(ctx)[0].status == "sent" and queued(ctx)[0].attempt_count == 2


def test_retry_schedule_ends_in_failed() -> None:
    now = utcnow()
    assert email_signals.retry_at(1, now) == now + timedelta(seconds=30)
    assert email_signals.retry_at(len(email_signals.RETRY_AFTER_S), now) is not None
    assert email_signals.retry_at(len(email_signals.RETRY_AFTER_S) + 1, now) is None


async def test_the_worker_mails_email_signals(
    api: httpx.AsyncClient, ctx: AppContext, smtp: tuple[Inbox, int]
) -> None:
    set_id = await make_set(api)
    await make_workflow(api, set_id, signals=[SIGNAL])
    async with running_worker(ctx):
        await api.post(f"/api/v1/sets/{set_id}/results", json={"values": {"batchnumber_": "W-1"}})
        await until(lambda: smtp[0].messages, timeout=10)
    assert smtp[0].messages[0][1]["Subject"].startswith("Batch W-1 new")


@pytest.mark.parametrize(
    ("signal", "place"),
    [
        ({"type": "email", "to": ["qa@example.com", "not an address"]}, "signals[0].to[1]"),
        ({"type": "email", "to": ["qa@example.com\nBcc: x@example.com"]}, "signals[0].to[0]"),
        ({"type": "email", "to": []}, "signals[0].to"),
        ({"type": "email", "to": ["qa@example.com"], "subject": "{{ oops"}, "signals[0].subject"),
        ({"type": "email", "to": ["qa@example.com"], "message": "{% if %}"}, "signals[0].message"),
    ],
)
async def test_bad_email_signals_are_refused_when_saved(
    api: httpx.AsyncClient, signal: dict[str, Any], place: str
) -> None:
    set_id = await make_set(api)
    response = await api.post(
        "/api/v1/workflows",
        json={"name": "w", "set_id": set_id, "triggers": {"entry": True}, "signals": [signal]},
    )
    assert response.status_code == 422, response.text
    assert response.json()["details"][0]["field"] == place


class Refusing(Inbox):
    """Refuses every login (535) and the mailbox ``gone@example.com`` (550)."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address == "gone@example.com":
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def refuse_login(*args: Any) -> AuthResult:
    return AuthResult(success=False, handled=False)


async def test_a_refused_login_is_retried_and_a_gone_mailbox_fails_alone(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """535 is qhook's own setting (QHOOK_SMTP_URL), not the e-mail's fault: every e-mail waits for
    a fixed password, none fails for good, and the batch stops at the first. 550 for one mailbox
    fails that e-mail only."""
    set_id = await make_set(api)
    await make_workflow(api, set_id, signals=[{**SIGNAL, "to": ["gone@example.com"]}])
    await make_workflow(api, set_id, signals=[{**SIGNAL, "to": ["qa@example.com"]}])
    await api.post(f"/api/v1/sets/{set_id}/results", json={"values": {"batchnumber_": "B-1"}})
    inbox = Refusing()
    with smtp_server(inbox, authenticator=refuse_login, auth_require_tls=False) as port:
        wrong = replace(
            ctx, settings=ctx.settings.model_copy(update={"smtp_url": f"smtp://qhook:wrong@127.0.0.1:{port}"})
        )
        now = utcnow()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            email_signals.send_due_emails(wrong, now)
        first, second = queued(ctx)
        assert (
            first.status == "pending" and first.attempt_count == 1 and "SMTP 535" in (first.last_error or "")
        )
        assert second.status == "pending" and second.attempt_count == 0  # given back untried
        assert second.next_attempt_at is not None and second.next_attempt_at <= now

        right = replace(
            ctx, settings=ctx.settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{port}"})
        )
        later = now + timedelta(seconds=31)
        assert email_signals.send_due_emails(right, later) == 1
    gone, mailed = queued(ctx)
    assert (
        gone.status == "failed"
        and "550" in (gone.last_error or "")
        and "gone@example.com" in (gone.last_error or "")
    )
    assert mailed.status == "sent"
    assert [to for to, _ in inbox.messages] == [["qa@example.com"]]


async def test_failed_emails_are_listed_with_the_servers_answer_and_can_be_sent_again(
    api: httpx.AsyncClient, ctx: AppContext, smtp: tuple[Inbox, int], viewer_key: str
) -> None:
    """E-mail signals that failed left one bare log line: no list, no reason, no way to send them
    again once the mail server was fixed."""
    inbox, _ = smtp
    set_id = await make_set(api)
    await make_workflow(api, set_id, signals=[{**SIGNAL, "to": ["gone@example.com"]}])
    await api.post(f"/api/v1/sets/{set_id}/results", json={"values": {"batchnumber_": "B-1"}})
    with smtp_server(Refusing()) as refusing_port:  # 550 for gone@
        refusing = replace(
            ctx, settings=ctx.settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{refusing_port}"})
        )
        assert email_signals.send_due_emails(refusing) == 0

    listed = await api.get("/api/v1/emails", params={"status": "failed"}, headers=auth(viewer_key))
    assert listed.status_code == 200, listed.text
    [failed] = listed.json()["items"]
    assert failed["recipients"] == ["gone@example.com"] and failed["set_id"] == set_id
    assert failed["last_error"].startswith("gone@example.com: SMTP 550")
    assert (await api.get("/api/v1/emails", params={"status": "sent"})).json()["items"] == []
    assert (await api.get("/api/v1/emails", params={"status": "lost"})).status_code == 422

    refused = await api.post(f"/api/v1/emails/{failed['id']}/resend", headers=auth(viewer_key))
    assert refused.status_code == 403  # an editor's change
    again = await api.post(f"/api/v1/emails/{failed['id']}/resend")
    assert again.status_code == 200 and again.json()["status"] == "pending"
    assert (await api.post(f"/api/v1/emails/{failed['id']}/resend")).status_code == 409  # waiting already
    assert email_signals.send_due_emails(ctx) == 1  # the fixed server takes it
    assert [to for to, _ in inbox.messages] == [["gone@example.com"]]
    sent = (await api.get("/api/v1/emails", params={"status": "sent"})).json()["items"][0]
    assert sent["id"] == failed["id"]
    assert (await api.post(f"/api/v1/emails/{failed['id']}/resend")).status_code == 409  # sent: no flood
    assert (await api.post("/api/v1/emails/99999/resend")).status_code == 404
