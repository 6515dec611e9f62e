"""``queue.claim`` hands back every column as stored, on SQLite (rows read back as one JSON array)
and PostgreSQL (``UPDATE ... RETURNING``), and leases exactly the rows it returns."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.domain.urls import origin_of
from qhook.store import queue
from qhook.store.tables import deliveries
from tests.support.delivery import enqueue, make_signal

URL = "https://erp.example.com/hook"


def test_claimed_rows_are_the_stored_rows_and_only_they_are_leased(ctx: AppContext) -> None:
    signal_id = make_signal(ctx, URL)
    bodies = ['{"n": 1}', '{"text": "ü \\" \\\\ \\n"}', "[1, 2]", '{"big": "' + "x" * 70_000 + '"}', "{}"]
    ids = enqueue(ctx, signal_id, URL, bodies[:3], result_id=7, ordered=True)
    ids += enqueue(ctx, signal_id, URL, bodies[3:], result_id=8)
    now = utcnow()
    with ctx.db.transaction() as tx:
        # One row due later (not claimed), one a test delivery.
        tx.execute(
            update(deliveries)
            .where(deliveries.c.id == ids[4])
            .values(next_attempt_at=now + timedelta(hours=1))
        )
        tx.execute(update(deliveries).where(deliveries.c.id == ids[3]).values(is_test=True))
    lease_until = now + timedelta(minutes=5)
    with ctx.db.autocommit() as tx:
        claimed = queue.claim(tx, owner="w1", now=utcnow(), lease_until=lease_until, limit=10, lane="first")

    with ctx.db.reading() as tx:
        stored = {r.id: r for r in tx.execute(select(deliveries))}
    # Ordered rows of one result: only the oldest unfinished may go.
    assert [d.id for d in claimed] == [ids[0], ids[3]]
    for d in claimed:
        row = stored[d.id]
        for field in queue.QueuedDelivery.__dataclass_fields__:
            assert getattr(d, field) == getattr(row, field), field
        assert (row.lease_owner, row.lease_expires_at) == ("w1", lease_until)
    assert claimed[0].ordered is True and claimed[1].is_test is True
    assert claimed[1].body == bodies[3]
    for other in set(ids) - {d.id for d in claimed}:
        assert stored[other].lease_owner is None


def test_a_claim_that_finds_nothing_leases_nothing(ctx: AppContext) -> None:
    signal_id = make_signal(ctx, URL)
    [only] = enqueue(ctx, signal_id, URL, ["{}"])
    now = utcnow()
    with ctx.db.autocommit() as tx:
        assert queue.claim(tx, owner="w1", now=now, lease_until=now, limit=10, lane="retry") == []
        assert (
            queue.claim(
                tx,
                owner="w1",
                now=now,
                lease_until=now,
                limit=10,
                lane="first",
                exclude_endpoints=[origin_of(URL)],
            )
            == []
        )
    with ctx.db.reading() as tx:
        assert (
            tx.execute(select(deliveries.c.lease_owner).where(deliveries.c.id == only)).scalar_one() is None
        )
