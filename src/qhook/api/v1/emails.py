"""/api/v1/emails: the e-mails of e-mail signals, their status and last error; send one again."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from qhook.api.deps import BigId, Ctx, Editor, Id, Viewer
from qhook.api.json_body import JsonBodyRoute
from qhook.api.v1.pages import Page
from qhook.services import emails
from qhook.store.email_outbox import QueuedEmail

router = APIRouter(route_class=JsonBodyRoute, tags=["emails"])


class EmailOut(BaseModel):
    id: int
    status: str  # pending sent failed
    recipients: list[str]
    subject: str
    workflow_id: int | None
    signal_id: int | None
    set_id: int | None
    result_id: int | None
    attempt_count: int
    next_attempt_at: datetime | None
    last_error: str | None  # the mail server's answer, e.g. "SMTP 550: 5.1.1 no such mailbox"
    created_at: datetime
    sent_at: datetime | None

    @classmethod
    def of(cls, email: QueuedEmail) -> EmailOut:
        return cls(
            id=email.id,
            status=email.status,
            recipients=list(email.recipients),
            subject=email.subject,
            workflow_id=email.workflow_id,
            signal_id=email.signal_id,
            set_id=email.set_id,
            result_id=email.result_id,
            attempt_count=email.attempt_count,
            next_attempt_at=email.next_attempt_at,
            last_error=email.last_error,
            created_at=email.created_at,
            sent_at=email.sent_at,
        )


class EmailPage(Page[EmailOut]):
    pass


@router.get("/emails")
def list_emails(
    ctx: Ctx,
    principal: Viewer,
    status: str | None = None,
    signal_id: Id | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> EmailPage:
    """Newest first; ``status=failed`` shows what did not go and the server's answer."""
    page, next_cursor = emails.list_emails(
        ctx, status=status, signal_id=signal_id, set_ids=principal.set_ids, limit=limit, cursor=cursor
    )
    return EmailPage(items=[EmailOut.of(e) for e in page], next_cursor=next_cursor)


@router.post("/emails/{email_id}/resend")
async def resend(email_id: BigId, ctx: Ctx, principal: Editor) -> EmailOut:
    """Send it once more, within seconds (after the mail server or QHOOK_SMTP_URL was fixed)."""
    email = await run_in_threadpool(
        lambda: emails.resend(ctx, email_id, actor=principal.name, set_ids=principal.set_ids)
    )
    return EmailOut.of(email)
