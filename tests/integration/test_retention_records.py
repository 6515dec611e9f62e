"""The purge also removes the working records beside the deliveries, on SQLite and PostgreSQL:
endpoint log entries, error reports and e-mails (sent or not) older than the failed retention,
and spent rate counters. They grew without end (the endpoint log by a row per Retry-After)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, insert, select

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.services import hub
from qhook.store.tables import email_outbox, endpoint_log, error_reports, rate_counters

ERP = "https://erp.example.com:443"


def _fill(ctx: AppContext) -> None:
    now = utcnow()
    old, recent = now - timedelta(days=ctx.settings.failed_retention_days + 1), now - timedelta(days=1)
    now_ms = int(now.timestamp() * 1000)
    with ctx.db.transaction() as tx:
        for at in (old, old, recent):
            tx.execute(
                insert(endpoint_log).values(origin=ERP, at=at, change="throttled", detail="Retry-After")
            )
        for created, sent in ((old, old), (old, None), (recent, recent)):  # old unsent ones go too
            tx.execute(
                insert(error_reports).values(
                    endpoint=ERP,
                    email="ops@example.com",
                    kind="delivery_failed",
                    text="x",
                    created_at=created,
                    sent_at=sent,
                )
            )
        for created, status in ((old, "sent"), (old, "failed"), (old, "pending"), (recent, "sent")):
            tx.execute(
                insert(email_outbox).values(
                    recipients=["qa@example.com"], subject="s", body="b", status=status, created_at=created
                )
            )
        for bucket, start in (("apikey:1", now_ms - 3 * 86_400_000), ("apikey:2", now_ms - 1000)):
            tx.execute(insert(rate_counters).values(bucket=bucket, window_start_ms=start, count=3))


def _counts(ctx: AppContext) -> dict[str, int]:
    with ctx.db.reading() as tx:
        return {
            t.name: int(tx.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (endpoint_log, error_reports, email_outbox, rate_counters)
        }


def test_purge_removes_old_working_records_and_keeps_the_rest(ctx: AppContext) -> None:
    _fill(ctx)
    before = _counts(ctx)
    planned = hub.purge(ctx, dry_run=True)
    assert planned.records == {
        "endpoint log entries": 2,
        "error reports": 2,
        "e-mails": 3,
        "rate counters": 1,
    }
    assert _counts(ctx) == before  # a dry run deletes nothing

    done = hub.purge(ctx, batch=1)  # small batches: every kind goes on until none is left
    assert done.records == planned.records
    assert _counts(ctx) == {"endpoint_log": 1, "error_reports": 1, "email_outbox": 1, "rate_counters": 1}
    assert hub.purge(ctx).records == dict.fromkeys(planned.records, 0)
