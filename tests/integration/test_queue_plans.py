"""The worker's queue statements walk an index and stop at their LIMIT on both databases.

A backlog after an ERP outage is large exactly when claims must be fast: a claim that sorted every
due row took ~430 ms at 200,000 rows on PostgreSQL. Each lane has a partial index in
(next_attempt_at, id) order; the circuit statements have one of an endpoint's unfinished rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import event, insert, text

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.store import queue, sets, workflows
from qhook.store.db import Tx
from qhook.store.tables import deliveries
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
def test_a_claim_planned_on_an_empty_queue_reads_only_its_rows_once_the_queue_fills(ctx: AppContext) -> None:
    """A worker polls an empty queue, then a burst arrives. psycopg prepares a statement run five
    times and PostgreSQL kept a generic plan made for the empty table: each claim of the burst read
    every row, by a full scan of the table or of its primary key (50 ms for a claim of 200 at 20,000
    rows, growing with the table). Planned each time, it reads its lane's index and its rows' keys."""
    with ctx.db.transaction() as tx:
        tx.execute(text("ANALYZE deliveries"))  # the statistics of an empty queue
    with ctx.db.engine.connect() as conn:
        for _ in range(12):
            with conn.begin():
                assert _claim("first")(conn) == []
        _fill(ctx, analyze=False)
        before = _index_reads(ctx, conn)
        with conn.begin():
            claimed = _claim("first")(conn)
            plans = conn.execute(
                text(
                    "SELECT generic_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE 'UPDATE deliveries SET lease_owner%'"
                )
            ).scalars()
            assert list(plans) == [0]  # prepared, and never run from a generic plan
        after = _index_reads(ctx, conn, since=before)
    assert isinstance(claimed, list) and len(claimed) == 50
    read = {name: after[name] - before[name] for name in after if after[name] != before[name]}
    assert read == {"ix_deliveries_due_first": 50, "pk_deliveries": 50}, read


def _index_reads(ctx: AppContext, conn: Tx, since: dict[str, int] | None = None) -> dict[str, int]:
    """Index entries read so far per index of deliveries, ``conn``'s reads included. A backend
    sends its counts when idle, soon after ``pg_stat_force_next_flush``: with ``since``, the
    counts are read until they differ from it and then hold still for 0.2 s (10 s at most)."""
    with conn.begin():
        conn.execute(text("SELECT pg_stat_force_next_flush()"))
    deadline = time.monotonic() + 10
    last: dict[str, int] | None = None
    while True:
        with ctx.db.transaction() as tx:
            tx.execute(text("SELECT pg_stat_clear_snapshot()"))
            rows = tx.execute(
                text(
                    "SELECT indexrelname, idx_tup_read FROM pg_stat_user_indexes WHERE relname = 'deliveries'"
                )
            ).all()
        now = {name: int(count) for name, count in rows}
        if since is None or (now != since and now == last) or time.monotonic() > deadline:
            return now
        last = now
        time.sleep(0.2)


def test_ordered_rows_look_up_their_key_in_its_own_index(filled: AppContext) -> None:
    """An ordered delivery waits for the unfinished rows of its order key before it: the claim and
    the Hub's "waiting for" find them in the index of unfinished keyed rows, on both databases.
    Here the statistics are from before any row had a key (as when a signal is switched to
    ordered): PostgreSQL took the endpoint's unfinished index and read every earlier row."""
    now = utcnow()
    rows = [
        {
            "webhook_id": f"msg_ordered_{i:020d}",
            "action": "modified",
            "url": ERP + "/hook",
            "endpoint": ERP,
            "body": "{}",
            "status": "pending",
            "attempt_count": 0,
            "next_attempt_at": now - timedelta(seconds=ROWS - i),
            "ordered": True,
            "order_key": f"7:{i % 40}",
            "created_at": now,
            "updated_at": now,
        }
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
    queue.refresh_statistics(ctx.db)  # what the worker runs at its first tick and every 10 minutes
    plan = _plan(ctx, _claim("first"))
    if ctx.db.is_sqlite:
        with ctx.db.reading() as tx:
            analysed = tx.exec_driver_sql("SELECT idx FROM sqlite_stat1 WHERE tbl = 'deliveries'").all()
        assert {"ix_deliveries_due_first", "ix_deliveries_status_id"} <= {r[0] for r in analysed}
        assert "ix_deliveries_due_first" in plan and "TEMP B-TREE" not in plan, plan
    else:
        assert "ix_deliveries_due_first" in plan, plan  # PostgreSQL: a no-op; autovacuum analyses
