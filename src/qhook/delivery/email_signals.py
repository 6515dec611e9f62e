"""Mailing the e-mails that e-mail signals queued (``email_outbox``), with retries.

The e-mail was rendered and queued in its event's transaction; here it is leased (so a second
worker on PostgreSQL skips it, and a worker that dies mid-send loses nothing), mailed over SMTP
(``QHOOK_SMTP_URL``, the same client as the error reports) and marked sent, or retried later.
Runs in the worker beside the error-report mailer (``mailer.run_mailer``).
"""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.delivery import mailer
from qhook.store import email_outbox as store
from qhook.store.email_outbox import QueuedEmail

logger = logging.getLogger(__name__)
# After the first try: 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h; then the e-mail has failed.
RETRY_AFTER_S = (30, 120, 600, 1800, 3600, 7200, 14400, 28800)
LEASE = timedelta(minutes=5)
BATCH = 50


def retry_at(attempts_done: int, now: datetime) -> datetime | None:
    """When to try again after ``attempts_done`` failed attempts; None: give up."""
    if attempts_done > len(RETRY_AFTER_S):
        return None
    return now + timedelta(seconds=RETRY_AFTER_S[attempts_done - 1])


def message_of(email: QueuedEmail, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(email.recipients)
    message["Subject"] = email.subject
    message["Auto-Submitted"] = "auto-generated"
    message["Message-ID"] = make_msgid(idstring=f"qhook-email-{email.id}")
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message.set_content(email.body or "")
    return message


def send_due_emails(ctx: AppContext, now: datetime | None = None) -> int:
    """Mail every due e-mail; returns how many were sent. Without QHOOK_SMTP_URL nothing is sent."""
    settings = ctx.settings
    if not settings.smtp_url:
        return 0
    sent = 0
    while True:
        moment = now or utcnow()
        with ctx.db.transaction() as tx:
            due = store.lease_due(tx, moment, limit=BATCH, lease=LEASE)
        for index, email in enumerate(due):
            try:
                mailer.send_message(settings, message_of(email, settings.smtp_from))
            except (OSError, smtplib.SMTPException, ValueError) as exc:
                attempts = email.attempt_count + 1
                for_good = mailer.refused_for_good(exc) or isinstance(exc, ValueError)
                later = None if for_good else retry_at(attempts, now or utcnow())
                with ctx.db.transaction() as tx:
                    store.mark_failed_attempt(tx, email.id, error=mailer.describe(exc), retry_at=later)
                logger.warning(
                    "e-mail signal not sent: %s",
                    mailer.describe(exc),
                    extra={
                        "action": "email_failed",
                        "email_id": email.id,
                        "attempt": attempts,
                        "retry_at": later,
                    },
                )
                if for_good or isinstance(exc, (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError)):
                    continue  # about this e-mail alone (for good, or "later" for its address)
                # The server itself is in trouble (unreachable, login refused): the rest of the batch
                # would fail alike. They go back and the mailer loop waits before the next round.
                with ctx.db.transaction() as tx:
                    store.release(tx, [e.id for e in due[index + 1 :]], moment)
                raise
            with ctx.db.transaction() as tx:
                store.mark_sent(tx, email.id, now or utcnow())
            sent += 1
        if len(due) < BATCH:
            return sent
