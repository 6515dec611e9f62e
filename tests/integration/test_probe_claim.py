"""The half-open circuit's probe takes a delivery a worker would send, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.store import queue
from qhook.store.tables import signals
from tests.support.delivery import enqueue, make_signal

URL = "https://erp.example.com/hook"


def test_a_probe_passes_over_deliveries_of_a_paused_signal(ctx: AppContext) -> None:
    """The probe took the endpoint's oldest unfinished delivery whatever its signal: one paused by
    a 410 was sent although paused."""
    paused = make_signal(ctx, URL)
    live = make_signal(ctx, URL)
    [of_paused] = enqueue(ctx, paused, URL, ['{"n": 1}'])
    [of_live] = enqueue(ctx, live, URL, ['{"n": 2}'])
    assert of_paused < of_live
    now = utcnow()
    with ctx.db.transaction() as tx:
        tx.execute(update(signals).where(signals.c.id == paused).values(paused_reason="410 Gone"))
        queue.hold_endpoint(tx, "https://erp.example.com:443", now)
        found = queue.claim_probe(
            tx,
            origin="https://erp.example.com:443",
            owner="w",
            now=now,
            lease_until=now + timedelta(minutes=2),
        )
    assert found is not None and found.id == of_live
