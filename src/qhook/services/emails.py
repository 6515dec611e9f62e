"""The e-mails of e-mail signals as people see them: list (newest first, by status), and send one
again once the mail server or its setting is fixed. Their sending is delivery/email_signals."""

from __future__ import annotations

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.domain import ids
from qhook.errors import Conflict, NotFound, field_error
from qhook.services import audit
from qhook.store import email_outbox as store
from qhook.store.email_outbox import QueuedEmail

STATUSES = ("pending", "sent", "failed")
MAX_LIMIT = 500


def list_emails(
    ctx: AppContext,
    *,
    status: str | None = None,
    signal_id: int | None = None,
    set_ids: frozenset[int] | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[QueuedEmail], str | None]:
    """A page newest first and the next page's cursor."""
    if status is not None and status not in STATUSES:
        raise field_error("status", f"one of {', '.join(STATUSES)}")
    if not 1 <= limit <= MAX_LIMIT:
        raise field_error("limit", f"between 1 and {MAX_LIMIT}")
    with ctx.db.reading() as tx:
        rows = store.list_emails(
            tx,
            status=status,
            signal_id=signal_id,
            set_ids=sorted(set_ids) if set_ids is not None else None,
            before_id=ids.read_cursor(cursor),
            limit=limit + 1,
        )
    return ids.cut_page(rows, limit)


def resend(
    ctx: AppContext, email_id: int, *, actor: str, set_ids: frozenset[int] | None = None
) -> QueuedEmail:
    """Send a failed e-mail again, with its full retry schedule: the worker's mailer takes it within
    seconds. A pending one goes by itself and a sent one went (409: resending those could flood
    the recipients)."""
    with ctx.db.transaction() as tx:
        email = store.email_by_id(tx, email_id)
        if email is None or (set_ids is not None and email.set_id not in set_ids):
            raise NotFound(f"e-mail {email_id}: no such e-mail")
        if email.status == "pending":
            raise Conflict(
                f"e-mail {email_id} is pending: it goes by itself (next try {email.next_attempt_at})"
            )
        if email.status == "sent":
            raise Conflict(
                f"e-mail {email_id} was sent at {email.sent_at}; only failed e-mails are sent again"
            )
        store.resend(tx, email_id, utcnow())
        audit.record(tx, actor, "email.resend", "email", email_id, {"was": email.status})
        found = store.email_by_id(tx, email_id)
    assert found is not None
    return found
