"""The worker's queue statements walk an index and stop at their LIMIT on both databases.

A backlog after an ERP outage is large exactly when claims must be fast: a claim that sorted every
due row took ~430 ms at 200,000 rows on PostgreSQL. Each lane has a partial index in
(next_attempt_at, id) order; the circuit statements have one of an endpoint's unfinished rows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, text

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.delivery import worker as worker_module
from qhook.store import queue, sets, workflows
from qhook.store.db import Tx
from qhook.store.tables import deliveries
from tests.support.delivery import running_worker, until
from tests.support.plans import explain

ROWS = 6000
ERP = "https://erp.example.com:443"
LIMS = "https://lims.example.com:443"


def _fill(ctx: AppContext, *, analyze: bool = True) -> None:
    now = utcnow()
    with ctx.db.transaction() as tx:
        set_id = sets.insert_set(tx, name="Batch release", kind="analysis_set", now=now)
        workflow_id = workflows.insert_workflow(
            tx,
            set_id=set_id,
            name="w",
            active=True,
            triggers={"entry": True},
            filter=None,
            error_email=None,
            now=now,
        )
        signal_id = workflows.insert_signal(
            tx, workflow_id=workflow_id, position=0, type="webhook", config={"url": ERP}, secret_enc=None
        )
    rows = []
    for i in range(ROWS):
        # Mostly delivered history, a backlog of first attempts and some retries, two endpoints.
        status = "succeeded" if i < ROWS // 2 else ("retrying" if i % 10 == 0 else "pending")
        created = now - timedelta(minutes=ROWS - i)
        rows.append(
            {
                "webhook_id": f"msg_{i:026d}",
                "signal_id": signal_id,
                "workflow_id": workflow_id,
                "action": "new",
                "url": (ERP if i % 3 else LIMS) + "/hook",
                "endpoint": ERP if i % 3 else LIMS,
                "body": "{}",
                "status": status,
                "attempt_count": 2 if status == "retrying" else (1 if status == "succeeded" else 0),
                "next_attempt_at": None if status == "succeeded" else created,
                "created_at": created,
                "updated_at": created,
            }
        )
    with ctx.db.transaction() as tx:
        tx.execute(insert(deliveries), rows)
    if analyze:
        with ctx.db.transaction() as tx:
            tx.execute(text("ANALYZE"))


@pytest.fixture
def filled(ctx: AppContext) -> AppContext:
    _fill(ctx)
    return ctx


def _plan(ctx: AppContext, run: Callable[[Tx], object]) -> str:
    with ctx.db.engine.connect() as tx, tx.begin() as outer:
        plan = explain(tx, run)
        outer.rollback()
    return plan


def _claim(lane: queue.Lane, exclude: tuple[str, ...] = ()) -> Callable[[Tx], object]:
    def run(tx: Tx) -> object:
        now = utcnow()
        return queue.claim(
            tx,
            owner="w1",
            now=now,
            lease_until=now + timedelta(minutes=1),
            limit=50,
            lane=lane,
            exclude_endpoints=exclude,
        )

    return run


@pytest.mark.parametrize(
    ("lane", "index"), [("first", "ix_deliveries_due_first"), ("retry", "ix_deliveries_due_retry")]
)
def test_claim_walks_its_lane_index_without_sorting(filled: AppContext, lane: queue.Lane, index: str) -> None:
    for run in (_claim(lane), _claim(lane, exclude=(LIMS,))):
        plan = _plan(filled, run)
        assert index in plan, plan
        if filled.db.is_sqlite:
            assert "TEMP B-TREE" not in plan and "SCAN deliveries" not in plan, plan
        else:
            # The candidate rows come from the lane's index in order; (the outer UPDATE may hash-join
            # the 50 ids on a table this small: at 200,000 rows it takes them by primary key).
            assert f"Index Scan using {index}" in plan and "Sort Key" not in plan, plan
            # The paused-signal and blocked-origin checks are lists built once, not joins per row.
            assert "Anti Join" not in plan and "hashed SubPlan" in plan, plan


def test_claim_takes_the_oldest_due_of_its_lane(filled: AppContext) -> None:
    with filled.db.transaction() as tx:
        first = _claim("first")(tx)
        retry = _claim("retry")(tx)
    assert isinstance(first, list) and isinstance(retry, list)
    assert [d.attempt_count for d in first] == [0] * 50
    assert [d.attempt_count for d in retry] == [2] * 50
    ids = [d.id for d in first]
    assert ids == sorted(ids)
    with filled.db.reading() as tx:
        oldest = tx.execute(
            text("SELECT min(id) FROM deliveries WHERE status = 'pending' AND attempt_count = 0")
        ).scalar_one()
    assert ids[0] == oldest


# A nested loop and nothing else: what PostgreSQL chose, from statistics taken when the queue was
# all delivered (one due row expected), for ``id IN (locking subquery with LIMIT)``. It ran the
# subquery again for every row of deliveries: two workers' claims ran for minutes at 100 % CPU
# while nothing was sent (bench/throughput), and here a claim of 50 leased all 2,700 due rows.
NESTED_LOOPS_ONLY = ("hashagg", "hashjoin", "mergejoin", "material", "memoize", "sort")


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_claim_and_renewal_find_their_rows_once_whatever_the_plan(filled: AppContext) -> None:
    now = utcnow()
    with filled.db.engine.connect() as tx, tx.begin() as outer:
        for knob in NESTED_LOOPS_ONLY:
            tx.exec_driver_sql(f"SET LOCAL enable_{knob} = off")
        claimed = _claim("first")(tx)
        assert isinstance(claimed, list) and len(claimed) == 50
        ids = [d.id for d in claimed]
        runs: list[Callable[[Tx], object]] = [
            _claim("first"),
            lambda t: queue.claim_probe(t, origin=ERP, owner="w1", now=now, lease_until=now),
            lambda t: queue.renew_leases(t, ids, owner="w1", lease_until=now + timedelta(minutes=5)),
        ]
        for run in runs:
            plan = explain(tx, run)
            # The locking scan is an InitPlan, run once; the rows are then taken by primary key.
            assert "InitPlan" in plan and "Semi Join" not in plan and "Subquery Scan" not in plan, plan
            assert "Index Cond: (id = ANY (" in plan, plan
        assert sorted(queue.renew_leases(tx, ids, owner="w1", lease_until=now + timedelta(minutes=5))) == ids
        outer.rollback()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_claim_planned_on_an_empty_queue_reads_only_its_rows_once_statistics_are_refreshed(
    ctx: AppContext,
) -> None:
    """A worker polls an empty queue, then a burst arrives. psycopg prepares a statement run five
    times, and PostgreSQL keeps the generic plan it made for the empty table: each claim of the
    burst reads every row. The worker's statistics refresh sees the table outgrew its statistics
    and analyses it, and the same connection plans its claim again."""
    with ctx.db.transaction() as tx:
        tx.execute(text("ANALYZE deliveries"))  # the statistics of an empty queue
    with ctx.db.engine.connect() as conn:
        for _ in range(12):
            with conn.begin():
                assert _claim("first")(conn) == []
        _fill(ctx, analyze=False)
        stale = _rows_read(ctx, conn, _claim("first"))
        _live_rows_counted(ctx, ROWS)
        assert queue.refresh_statistics(ctx.db) is True
        assert queue.refresh_statistics(ctx.db) is False  # current now: nothing to do
        fresh = _rows_read(ctx, conn, _claim("first"))
    assert stale >= ROWS // 2, stale  # the plan made for an empty table: every row, or half
    # From the lane's index the 50 the first claim leased and the next 50, then these by primary key.
    assert fresh <= 3 * 50, fresh


def _live_rows_counted(ctx: AppContext, rows: int) -> None:
    """Wait until PostgreSQL counts ``rows`` committed rows of deliveries (its inserting backend
    sends the count within 1-10 s), as a worker's statistics refresh would see them."""
    deadline = time.monotonic() + 15
    while (live := _table_statistic(ctx, "n_live_tup")) < rows:
        assert time.monotonic() < deadline, f"{live} rows counted"
        time.sleep(0.1)


def _table_statistic(ctx: AppContext, expression: str) -> int:
    """``expression`` over deliveries' row of ``pg_stat_user_tables``, as PostgreSQL counts now."""
    with ctx.db.transaction() as tx:
        tx.execute(text("SELECT pg_stat_clear_snapshot()"))
        query = f"SELECT {expression} FROM pg_stat_user_tables WHERE relname = 'deliveries'"
        return int(tx.execute(text(query)).scalar_one())


def _rows_read(ctx: AppContext, conn: Tx, run: Callable[[Tx], object]) -> int:
    """Rows of deliveries that ``run`` read on ``conn`` (by scans and by index), from PostgreSQL's
    statistics: a backend sends its counts once idle, soon after ``pg_stat_force_next_flush``."""

    def counted() -> int:
        return _table_statistic(ctx, "seq_tup_read + coalesce(idx_tup_fetch, 0)")

    def flushed() -> None:
        with conn.begin():
            conn.execute(text("SELECT pg_stat_force_next_flush()"))

    flushed()
    before = counted()
    with conn.begin():
        claimed = run(conn)
    assert isinstance(claimed, list) and len(claimed) == 50
    flushed()
    deadline = time.monotonic() + 10
    while (after := counted()) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    return after - before


async def test_a_worker_analyses_a_queue_that_outgrew_its_statistics(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "SQLITE_STATISTICS_LOOK_S", 0.5)
    async with running_worker(ctx):
        await asyncio.sleep(1.5)  # a tick or more on the empty queue (SQLite: analysed empty)
        assert await asyncio.to_thread(_analysed_rows, ctx) == 0
        await asyncio.to_thread(_fill_later, ctx, 2000)
        # PostgreSQL counts the committed rows within 1-10 s; the worker looks every second.
        rows = await until(lambda: _analysed_rows(ctx), timeout=20)
    assert 1800 <= rows <= 2000  # 2,000; SQLite's sample, bounded by analysis_limit, may count fewer


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_statistics_of_an_empty_queue_are_taken_again_once_it_fills(ctx: AppContext) -> None:
    """The worker's first look at a fresh database analyses an empty queue: SQLite then sorted
    every waiting row for each claim (20 ms a claim of 200 at 20,000 waiting, against 3.6 ms)."""
    assert queue.refresh_statistics(ctx.db, due=True) is True  # the first tick's
    _fill(ctx, analyze=False)
    assert "TEMP B-TREE" in _plan(ctx, _claim("first"))  # planned for an empty queue
    assert queue.refresh_statistics(ctx.db) is True  # outgrown: taken again
    assert queue.refresh_statistics(ctx.db) is False  # current now
    plan = _plan(ctx, _claim("first"))
    assert "ix_deliveries_due_first" in plan and "TEMP B-TREE" not in plan, plan


def _analysed_rows(ctx: AppContext) -> int:
    """The rows of deliveries its planner statistics recorded (0 while they say empty)."""
    with ctx.db.reading() as tx:
        if ctx.db.is_sqlite:
            stat = tx.execute(
                text("SELECT stat FROM sqlite_stat1 WHERE idx = 'ix_deliveries_created_at'")
            ).scalar()
            return int(str(stat).split()[0]) if stat else 0
        recorded = tx.execute(text("SELECT reltuples FROM pg_class WHERE relname = 'deliveries'"))
        return max(0, int(recorded.scalar_one()))


def _fill_later(ctx: AppContext, count: int) -> None:
    """``count`` deliveries due in an hour: a burst the worker must not send within the test."""
    later = utcnow() + timedelta(hours=1)
    body = '{"batch": "' + "x" * 400 + '"}'
    rows = [_waiting(f"msg_later_{i:020d}", later, body=body) for i in range(count)]
    with ctx.db.transaction() as tx:
        tx.execute(insert(deliveries), rows)


def _waiting(webhook_id: str, due: datetime, **columns: Any) -> dict[str, Any]:
    """A first attempt for the ERP, due at ``due``; ``columns`` override or add."""
    now = utcnow()
    return {
        "webhook_id": webhook_id,
        "action": "new",
        "url": ERP + "/hook",
        "endpoint": ERP,
        "body": "{}",
        "status": "pending",
        "attempt_count": 0,
        "next_attempt_at": due,
        "created_at": now,
        "updated_at": now,
        **columns,
    }


def test_ordered_rows_look_up_their_key_in_its_own_index(filled: AppContext) -> None:
    """An ordered delivery waits for the unfinished rows of its order key before it: the claim and
    the Hub's "waiting for" find them in the index of unfinished keyed rows, on both databases.
    Here the statistics are from before any row had a key (as when a signal is switched to
    ordered): PostgreSQL took the endpoint's unfinished index and read every earlier row."""
    now = utcnow()
    rows = [
        _waiting(
            f"msg_ordered_{i:020d}",
            now - timedelta(seconds=ROWS - i),
            action="modified",
            ordered=True,
            order_key=f"7:{i % 40}",
        )
        for i in range(400)
    ]
    with filled.db.transaction() as tx:
        tx.execute(insert(deliveries), rows)
        last = int(tx.execute(text("SELECT max(id) FROM deliveries")).scalar_one())
    plans = {
        "claim": _plan(filled, _claim("first")),
        "waits for": _plan(filled, lambda tx: queue.ordered_predecessor(tx, last)),
    }
    for name, plan in plans.items():
        assert "ix_deliveries_unfinished_order_key" in plan, (name, plan)
        assert "ix_deliveries_unfinished_endpoint" not in plan, (name, plan)
    with filled.db.reading() as tx:
        waits_for = queue.ordered_predecessor(tx, last)
        earliest = tx.execute(
            text("SELECT min(id) FROM deliveries WHERE order_key = :key"), {"key": f"7:{399 % 40}"}
        ).scalar_one()
    assert waits_for == (earliest, "pending")


def test_circuit_statements_use_the_unfinished_endpoint_index(filled: AppContext) -> None:
    now = utcnow()
    runs: list[Callable[[Tx], object]] = [
        lambda tx: queue.hold_endpoint(tx, ERP, now),
        lambda tx: queue.unhold_endpoint(tx, ERP, now),
        lambda tx: queue.claim_probe(
            tx, origin=ERP, owner="w1", now=now, lease_until=now + timedelta(minutes=1)
        ),
    ]
    for run in runs:
        plan = _plan(filled, run)
        # Only unfinished rows are read, never the endpoint's delivered history.
        assert "ix_deliveries_endpoint_id" not in plan, plan
        if filled.db.is_sqlite:
            assert "ix_deliveries_unfinished_endpoint" in plan, plan
            assert "TEMP B-TREE" not in plan and "SCAN deliveries" not in plan, plan
        else:
            # PostgreSQL may take the unfinished rows from the (status, id) index instead.
            assert "ix_deliveries_unfinished_endpoint" in plan or "ix_deliveries_status_id" in plan, plan
            assert "Seq Scan on deliveries" not in plan and "Sort Key" not in plan, plan


def test_queue_depth_counts_the_backlog_exactly_and_history_cheaply(
    filled: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    backlog = ROWS // 2
    retrying = len([i for i in range(ROWS // 2, ROWS) if i % 10 == 0])
    with filled.db.transaction() as tx:  # SET LOCAL needs a transaction block (reads run without one)
        assert queue.depth_by_status(tx) == {
            "pending": backlog - retrying,
            "retrying": retrying,
            "succeeded": ROWS // 2,
        }
        if not filled.db.is_sqlite:
            # Half this small table is backlog, so PostgreSQL would rightly scan it; the point is
            # that an index serves the count (a real backlog is a sliver of the history).
            tx.execute(text("SET LOCAL enable_seqscan = off"))
        plan = explain(tx, queue.depth_by_status)
    assert "Seq Scan on deliveries" not in plan and "SCAN deliveries" not in plan, plan
    # Past the threshold PostgreSQL answers the finished statuses from its statistics (ANALYZE saw
    # every row of this small table, so the estimate is the count); the backlog stays exact.
    monkeypatch.setattr(queue, "EXACT_HISTORY_ROWS", 1000)
    with filled.db.reading() as tx:
        statements: list[str] = []
        event.listen(tx, "before_cursor_execute", lambda c, cur, sql, *rest: statements.append(sql))
        depth = queue.depth_by_status(tx)
    assert depth == {"pending": backlog - retrying, "retrying": retrying, "succeeded": ROWS // 2}
    finished_counted = any("NOT IN" in s and "count(" in s for s in statements)
    assert finished_counted is filled.db.is_sqlite, statements


def test_worker_statistics_refresh_lets_sqlite_walk_the_lane_index(ctx: AppContext) -> None:
    """A never-analysed SQLite sorts every waiting row; the worker's periodic refresh fixes the plan."""
    _fill(ctx, analyze=False)
    queue.refresh_statistics(ctx.db, due=True)  # what the worker runs at its first tick and every 10 minutes
    plan = _plan(ctx, _claim("first"))
    if ctx.db.is_sqlite:
        with ctx.db.reading() as tx:
            analysed = tx.exec_driver_sql("SELECT idx FROM sqlite_stat1 WHERE tbl = 'deliveries'").all()
        assert {"ix_deliveries_due_first", "ix_deliveries_status_id"} <= {r[0] for r in analysed}
        assert "ix_deliveries_due_first" in plan and "TEMP B-TREE" not in plan, plan
    else:
        assert "ix_deliveries_due_first" in plan, plan  # PostgreSQL: a no-op; autovacuum analyses
