"""Error reports by e-mail: at most one digest per endpoint and address per interval.

The worker queues ``error_reports`` rows (a delivery failed for good, a circuit opened) in the
same transaction as the outcome; this loop groups the unsent ones and mails them over SMTP
(``QHOOK_SMTP_URL``) with the standard library, in a thread.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import smtplib
from collections import defaultdict
from datetime import datetime, timedelta
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.delivery.sender import tls_context
from qhook.settings import Settings
from qhook.store import error_reports
from qhook.store.db import Tx

logger = logging.getLogger(__name__)
CHECK_EVERY_S = 5.0


def send_due_digests(ctx: AppContext, now: datetime | None = None) -> int:
    """Mail every (endpoint, address) group whose interval has passed; returns messages sent.

    On PostgreSQL the whole round is one transaction holding the mailer lock and the claimed rows,
    so several workers never mail the same digest; a worker that finds the lock taken skips the
    round. On SQLite (one worker) the rows are read, mailed, then marked, without a long transaction.
    """
    settings = ctx.settings
    if not settings.smtp_url:
        return 0
    now = now or utcnow()
    if ctx.db.is_sqlite:
        with ctx.db.reading() as tx:
            due = _due(tx, now, settings.error_mail_interval_s)
        sent = 0
        for (endpoint, email), items in due.items():
            send_message(settings, _digest(settings.smtp_from, email, endpoint, items))
            with ctx.db.transaction() as tx:
                error_reports.mark_sent(tx, [r.id for r in items], now)
            sent += 1
        return sent
    failure: Exception | None = None
    sent = 0
    with ctx.db.transaction() as tx:
        if not error_reports.claim_mailer(tx):
            return 0
        for (endpoint, email), items in _due(tx, now, settings.error_mail_interval_s, lock=True).items():
            try:
                send_message(settings, _digest(settings.smtp_from, email, endpoint, items))
            except (OSError, smtplib.SMTPException) as exc:
                failure = exc  # keep what was mailed so far marked; the rest goes next round
                break
            error_reports.mark_sent(tx, [r.id for r in items], now)
            sent += 1
    if failure is not None:
        raise failure
    return sent


def _due(
    tx: Tx, now: datetime, interval_s: float, *, lock: bool = False
) -> dict[tuple[str, str], list[error_reports.ErrorReport]]:
    """Unsent reports grouped by (endpoint, address), for the groups whose interval has passed."""
    interval = timedelta(seconds=interval_s)
    groups: dict[tuple[str, str], list[error_reports.ErrorReport]] = defaultdict(list)
    for report in error_reports.unsent(tx, lock=lock):
        groups[(report.endpoint, report.email)].append(report)
    due = {}
    for key, items in groups.items():
        last = error_reports.last_sent_at(tx, *key)
        if last is None or now - last >= interval:
            due[key] = items
    return due


def _digest(sender: str, to: str, endpoint: str, items: list[error_reports.ErrorReport]) -> EmailMessage:
    failed = sum(1 for r in items if r.kind == "delivery_failed")
    opened = any(r.kind == "circuit_open" for r in items)
    parts = []
    if opened:
        parts.append("circuit opened")
    if failed:
        parts.append(f"{failed} deliver{'y' if failed == 1 else 'ies'} failed")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = f"qhook: {endpoint}: {', '.join(parts)}"
    lines = [f"qhook could not deliver webhooks to {endpoint}.", ""]
    lines += [f"- {r.created_at:%Y-%m-%d %H:%M:%S} UTC  {r.text}" for r in items]
    lines += ["", "Details and redelivery: the Integration Hub of your qhook."]
    message.set_content("\n".join(lines))
    return message


class PlainTextLogin(smtplib.SMTPException):
    """The SMTP URL has a user, and the connection to a server off this machine is not encrypted."""


def send_message(settings: Settings, message: EmailMessage) -> None:
    """Mail ``message`` through ``QHOOK_SMTP_URL``.

    TLS checks the server's certificate and name like the webhooks do (system CAs plus
    ``QHOOK_CA_BUNDLE``, TLS 1.2 or newer): ``smtps://`` from the start, ``smtp+starttls://``
    always, ``smtp://`` whenever the server offers STARTTLS. A password never goes unencrypted to
    a server off this machine.
    """
    parts = urlsplit(settings.smtp_url)
    secure = parts.scheme == "smtps"
    port = parts.port or (465 if secure else 25)
    host = parts.hostname or "localhost"
    context = tls_context(settings)
    client = (
        smtplib.SMTP_SSL(host, port, timeout=30, context=context)
        if secure
        else smtplib.SMTP(host, port, timeout=30)
    )
    with client:
        encrypted = secure
        if not secure:
            client.ehlo()
            if parts.scheme == "smtp+starttls" or client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
                encrypted = True
        if parts.username:
            if not may_log_in(encrypted=encrypted, host=host):
                raise PlainTextLogin(
                    f"{host}:{port} offers no STARTTLS: qhook does not send the SMTP password "
                    "unencrypted (use smtps:// or a server with STARTTLS)"
                )
            client.login(unquote(parts.username), unquote(parts.password or ""))
        client.send_message(message)


def may_log_in(*, encrypted: bool, host: str) -> bool:
    """A password goes over TLS, or to a relay on this machine."""
    if encrypted or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def run_mailer(ctx: AppContext, stop: asyncio.Event, every_s: float = CHECK_EVERY_S) -> None:
    """Send due digests and e-mail signals until ``stop``; SMTP trouble is logged and retried."""
    from qhook.delivery import email_signals  # it builds its messages with this module's client

    while not stop.is_set():
        try:
            await asyncio.to_thread(send_due_digests, ctx)
        except (OSError, smtplib.SMTPException) as exc:
            logger.warning("error report not sent: %s", type(exc).__name__, extra={"action": "mail_failed"})
        except Exception:
            logger.exception("error reports failed", extra={"action": "mail_failed"})
        try:
            await asyncio.to_thread(email_signals.send_due_emails, ctx)  # e-mail signals, with retries
        except Exception:
            logger.exception("e-mail signals failed", extra={"action": "email_failed"})
        try:
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        except TimeoutError:
            pass
