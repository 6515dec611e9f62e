"""``queue.record_outcomes``: many finished attempts in one call, on SQLite and PostgreSQL.

Many rows per statement (chunks of ``ROWS_PER_STATEMENT``: a VALUES list on SQLite, one JSON
document through ``json_to_recordset`` on PostgreSQL); a batch with the same delivery twice is
written in rounds, in order.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from sqlalchemy import event, func, select, text, update

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.store import queue
from qhook.store.tables import attempts, deliveries
from tests.support.delivery import enqueue, make_signal

URL = "https://erp.example.com/hook"


def _attempt(delivery_id: int, n: int) -> queue.AttemptRow:
    return queue.AttemptRow(
        delivery_id=delivery_id,
        number=1,
        trigger="scheduled",
        started_at=utcnow() - timedelta(milliseconds=n),
        duration_ms=n % 50,
        request_headers={"Content-Type": "application/json", "webhook-id": f"msg_{n}"},
        status_code=200 if n % 3 else 503,
        response_headers={"Server": "erp"} if n % 2 else None,
        response_body=f"answer {n}" if n % 2 else None,
        error_kind=None if n % 3 else "http_status",
        error=None if n % 3 else "HTTP 503 Service Unavailable",
        hint=None if n % 3 else "The ERP was down.",
    )


def _finish(delivery_id: int, n: int) -> queue.Finish:
    ok = bool(n % 3)
    now = utcnow()
    return queue.Finish(
        delivery_id=delivery_id,
        status="succeeded" if ok else "retrying",
        attempt_count=1,
        next_attempt_at=None if ok else now + timedelta(seconds=n),
        last_status_code=200 if ok else 503,
        last_error_kind=None if ok else "http_status",
        hint=None if ok else "The ERP was down.",
        delivered_at=now if ok else None,
    )


def test_a_batch_larger_than_one_statement_writes_every_row_as_given(ctx: AppContext) -> None:
    count = queue.ROWS_PER_STATEMENT * 2 + 3
    signal_id = make_signal(ctx, URL)
    ids = enqueue(ctx, signal_id, URL, [f'{{"n": {n}}}' for n in range(count)])
    given_attempts = [_attempt(d, n) for n, d in enumerate(ids)]
    given_finishes = [_finish(d, n) for n, d in enumerate(ids)]
    with ctx.db.transaction() as tx:
        lease_until = utcnow() + timedelta(minutes=1)
        tx.execute(update(deliveries).values(lease_owner="w1", lease_expires_at=lease_until))
        queue.record_outcomes(tx, given_attempts, given_finishes, now=utcnow())

    with ctx.db.reading() as tx:
        written = {r.delivery_id: r for r in tx.execute(select(attempts))}
        rows = {r.id: r for r in tx.execute(select(deliveries))}
        # SQL NULL, not a JSON null (which reads back as None all the same).
        no_headers = tx.execute(
            select(func.count()).select_from(attempts).where(text("response_headers IS NULL"))
        ).scalar_one()
    assert len(written) == count
    assert no_headers == sum(1 for a in given_attempts if a.response_headers is None)
    for a in given_attempts:
        row = written[a.delivery_id]
        assert (row.number, row.trigger, row.duration_ms, row.status_code) == (
            a.number,
            a.trigger,
            a.duration_ms,
            a.status_code,
        )
        assert row.started_at == a.started_at
        assert row.request_headers == a.request_headers
        assert row.response_headers == a.response_headers
        assert (row.response_body, row.error_kind, row.error, row.hint) == (
            a.response_body,
            a.error_kind,
            a.error,
            a.hint,
        )
    for f in given_finishes:
        row = rows[f.delivery_id]
        assert (row.status, row.attempt_count, row.last_status_code, row.last_error_kind, row.hint) == (
            f.status,
            f.attempt_count,
            f.last_status_code,
            f.last_error_kind,
            f.hint,
        )
        assert row.next_attempt_at == f.next_attempt_at
        assert row.delivered_at == f.delivered_at
        assert (row.lease_owner, row.lease_expires_at) == (None, None)


def test_a_row_cancelled_in_flight_stays_cancelled_unless_delivered(ctx: AppContext) -> None:
    signal_id = make_signal(ctx, URL)
    delivered, failed, plain = enqueue(ctx, signal_id, URL, ["{}", "{}", "{}"])
    earlier = utcnow() - timedelta(hours=1)
    with ctx.db.transaction() as tx:
        tx.execute(
            update(deliveries)
            .where(deliveries.c.id.in_([delivered, failed]))
            .values(status="cancelled", hint="Cancelled: the signal was removed.")
        )
        tx.execute(update(deliveries).where(deliveries.c.id == plain).values(delivered_at=earlier))
        queue.record_outcomes(
            tx,
            [],
            [_finish(delivered, 1), _finish(failed, 0), _finish(plain, 0)],
            now=utcnow(),
        )
    with ctx.db.reading() as tx:
        rows = {r.id: r for r in tx.execute(select(deliveries))}
    assert rows[delivered].status == "succeeded"
    assert rows[failed].status == "cancelled"
    assert rows[failed].next_attempt_at is None
    assert rows[failed].hint == "Cancelled: the signal was removed."
    assert rows[plain].status == "retrying"
    assert rows[plain].delivered_at == earlier  # a later failed attempt does not erase it


def test_the_same_delivery_twice_in_a_batch_is_applied_in_order(ctx: AppContext) -> None:
    signal_id = make_signal(ctx, URL)
    (only,) = enqueue(ctx, signal_id, URL, ["{}"])
    first = _finish(only, 0)  # retrying, 503
    second = queue.Finish(
        delivery_id=only,
        status="succeeded",
        attempt_count=2,
        next_attempt_at=None,
        last_status_code=200,
        last_error_kind=None,
        hint=None,
        delivered_at=utcnow(),
    )
    written_at = utcnow()
    with ctx.db.transaction() as tx:
        queue.record_outcomes(tx, [_attempt(only, 0)], [first, second], now=written_at)
    with ctx.db.reading() as tx:
        row = tx.execute(select(deliveries).where(deliveries.c.id == only)).one()
    assert (row.status, row.attempt_count, row.last_status_code) == ("succeeded", 2, 200)
    assert row.updated_at == written_at
    assert row.delivered_at == second.delivered_at


def test_any_batch_size_uses_few_statement_texts(ctx: AppContext) -> None:
    """Every connection keeps its prepared statements (SQLite: up to 128 each), so the texts must
    not vary with every batch size: a worker's peak memory grew by tens of MB when they did."""
    signal_id = make_signal(ctx, URL)
    count = 300
    ids = enqueue(ctx, signal_id, URL, ["{}"] * count)
    texts: set[str] = set()

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        texts.add(statement)

    with ctx.db.transaction() as tx:
        event.listen(tx, "before_cursor_execute", seen)
        for size in range(1, count + 1):
            attempts_now = [
                dataclasses.replace(_attempt(d, n), number=size) for n, d in enumerate(ids[:size])
            ]
            finishes_now = [_finish(d, n) for n, d in enumerate(ids[:size])]
            queue.record_outcomes(tx, attempts_now, finishes_now, now=utcnow())
        event.remove(tx, "before_cursor_execute", seen)
    inserts = {t for t in texts if t.startswith("INSERT INTO attempts")}
    updates = {t for t in texts if t.startswith("UPDATE deliveries")}
    assert inserts | updates == texts
    # SQLite: one text per power of two up to ROWS_PER_STATEMENT; PostgreSQL: one text in all.
    most = queue.ROWS_PER_STATEMENT.bit_length() if ctx.db.is_sqlite else 1
    assert 1 <= len(inserts) <= most
    assert 1 <= len(updates) <= most
    with ctx.db.reading() as tx:
        assert tx.execute(select(func.count()).select_from(attempts)).scalar_one() == count * (count + 1) // 2
