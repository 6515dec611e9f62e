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
from email.utils import formatdate, make_msgid
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.delivery.sender import tls_context
from qhook.errors import QhookError
from qhook.settings import Settings
from qhook.store import endpoints as endpoint_store
from qhook.store import error_reports
from qhook.store.db import Tx

logger = logging.getLogger(__name__)
CHECK_EVERY_S = 5.0


def send_due_digests(ctx: AppContext, now: datetime | None = None) -> int:
    """Mail every (endpoint, address) group whose interval has passed; returns messages sent.

    Each group goes on its own: an address the mail server refuses for good (5xx) is logged with
    the server's answer and dropped, and the groups after it still go. Trouble with the server
    itself (unreachable, login refused) ends the round and is raised, so the loop waits before
    trying again; what was mailed so far stays marked.

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
            states = endpoint_store.states(tx, {endpoint for endpoint, _ in due})
        sent = 0
        for (endpoint, email), items in due.items():
            done = _mail_group(
                settings, endpoint, email, items, states.get(endpoint)
            )  # raises on server trouble
            if done != "deferred":
                with ctx.db.transaction() as tx:
                    error_reports.mark_sent(tx, [r.id for r in items], now)
            sent += done == "mailed"
        return sent
    failure: Exception | None = None
    sent = 0
    with ctx.db.transaction() as tx:
        if not error_reports.claim_mailer(tx):
            return 0
        due = _due(tx, now, settings.error_mail_interval_s, lock=True)
        states = endpoint_store.states(tx, {endpoint for endpoint, _ in due})
        for (endpoint, email), items in due.items():
            try:
                done = _mail_group(settings, endpoint, email, items, states.get(endpoint))
            except Exception as exc:  # raised after the commit below
                failure = exc  # keep what was mailed so far marked; the rest goes next round
                break
            if done != "deferred":
                error_reports.mark_sent(tx, [r.id for r in items], now)
            sent += done == "mailed"
    if failure is not None:
        raise failure
    return sent


def _mail_group(
    settings: Settings,
    endpoint: str,
    email: str,
    items: list[error_reports.ErrorReport],
    state: endpoint_store.EndpointState | None,
) -> Literal["mailed", "dropped", "deferred"]:
    """Mail one digest. The server's refusal of this message or address (not of qhook) is about
    this digest alone: for good (5xx) it is dropped, for now (4xx: greylisting, a full mailbox) it
    waits for the next round; either way the other digests go on. Trouble with the server itself
    is raised."""
    try:
        send_message(settings, _digest(settings, email, endpoint, items, state))
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError) as exc:
        extra = {"action": "mail_refused", "endpoint": endpoint, "email": email, "reports": len(items)}
        if refused_for_good(exc):
            logger.warning(
                "error digest dropped: the mail server refused it (%s)", describe(exc), extra=extra
            )
            return "dropped"
        logger.info("error digest deferred: the mail server said later (%s)", describe(exc), extra=extra)
        return "deferred"
    return "mailed"


def refused_for_good(exc: Exception) -> bool:
    """The server refused this message or its recipients with a 5xx: waiting will not help. Trouble
    with qhook's own side (login refused, sender refused, unreachable) is worth another try."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    return isinstance(exc, smtplib.SMTPDataError) and exc.smtp_code >= 500


def describe(exc: Exception) -> str:
    """What went wrong, for the log and the Hub: the server's code and words, never the password."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(f"{to}: {_answer(code, text)}" for to, (code, text) in exc.recipients.items())
    if isinstance(exc, smtplib.SMTPResponseException):
        return _answer(exc.smtp_code, exc.smtp_error)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _answer(code: int, text: bytes | str) -> str:
    words = text.decode(errors="replace") if isinstance(text, bytes) else text
    return f"SMTP {code}: {words}"


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


def _digest(
    settings: Settings,
    to: str,
    endpoint: str,
    items: list[error_reports.ErrorReport],
    state: endpoint_store.EndpointState | None,
) -> EmailMessage:
    failed = sum(1 for r in items if r.kind == "delivery_failed")
    opened = any(r.kind == "circuit_open" for r in items)
    parts = []
    if opened:
        parts.append("circuit opened")
    if failed:
        parts.append(f"{failed} deliver{'y' if failed == 1 else 'ies'} failed")
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to
    message["Subject"] = f"qhook: {endpoint}: {', '.join(parts)}"
    message["Date"] = formatdate(localtime=False, usegmt=True)  # relays off this machine add none
    message["Message-ID"] = make_msgid(idstring=f"qhook-digest-{items[0].id}")
    message["Auto-Submitted"] = "auto-generated"
    lines = [f"qhook could not deliver webhooks to {endpoint}.", ""]
    lines += [f"- {r.created_at:%Y-%m-%d %H:%M:%S} UTC  {r.text}" for r in items]
    if opened and state is not None and state.circuit_state == "closed":
        # Mailed at the end of the interval: the endpoint may be back by then.
        lines += [
            "",
            "Since then the circuit closed again (a probe succeeded): held deliveries are being sent.",
        ]
    lines += ["", _where_to_look(settings.public_url, endpoint)]
    message.set_content("\n".join(lines))
    return message


def _where_to_look(public_url: str, endpoint: str) -> str:
    if not public_url:
        return "Details and redelivery: the Integration Hub of your qhook (set QHOOK_PUBLIC_URL for a link)."
    base = public_url.rstrip("/")
    return (
        f"Failed deliveries to it: {base}/ui/hub?status=failed&endpoint={quote(endpoint, safe='')}\n"
        f"The endpoint's state and history: {base}/ui/endpoints"
    )


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
            # The address connected to, not the name: "localhost" may resolve anywhere.
            peer = str(client.sock.getpeername()[0]) if client.sock is not None else host
            if not may_log_in(encrypted=encrypted, host=peer):
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


MAX_BACKOFF_S = 600.0


async def run_mailer(ctx: AppContext, stop: asyncio.Event, every_s: float = CHECK_EVERY_S) -> None:
    """Send due digests and e-mail signals until ``stop``.

    When the mail server or the database is in trouble, the next round waits longer each time
    (up to 10 minutes), and one line says why: a wrong password is not tried 30 times a minute."""
    from qhook.delivery import email_signals  # it builds its messages with this module's client

    wait_s = every_s
    while not stop.is_set():
        trouble: str | None = None
        for job, what in (
            (send_due_digests, "error digests"),
            (email_signals.send_due_emails, "e-mail signals"),
        ):
            if stop.is_set():
                break
            try:
                await asyncio.to_thread(job, ctx)
            except (OSError, smtplib.SMTPException) as exc:
                trouble = f"{what} not sent: {describe(exc)} (check QHOOK_SMTP_URL and the mail server)"
            except QhookError as exc:
                trouble = f"{what} not sent: {exc.for_operators}"
            except Exception:
                logger.exception("%s failed", what, extra={"action": "mail_failed"})
                trouble = f"{what} failed"
        if trouble is None:
            wait_s = every_s
        else:
            wait_s = min(max(wait_s * 2, 10.0), MAX_BACKOFF_S)
            logger.warning("%s; next try in %g s", trouble, wait_s, extra={"action": "mail_failed"})
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait_s)
        except TimeoutError:
            pass
