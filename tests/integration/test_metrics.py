"""``GET /metrics``: worker counters and histograms, queue depth and open circuits from the database."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from qhook.api.app import create_app
from qhook.clock import utcnow
from qhook.context import AppContext, open_context
from qhook.domain.urls import origin_of
from qhook.settings import Settings
from qhook.store import endpoints as endpoint_store
from qhook.store import hub as hub_store
from qhook.store.tables import deliveries, email_outbox
from tests.conftest import TEST_SECRET_KEY
from tests.support.delivery import delivery, enqueue, make_signal, receiver, running_worker, until


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_deliveries_and_read_depth(ctx: AppContext, client: httpx.AsyncClient) -> None:
    before = samples((await client.get("/metrics")).text)
    succeeded_before = before.get(("qhook_deliveries_total", (("outcome", "succeeded"),)), 0.0)
    latency_before = before.get(("qhook_event_to_delivery_seconds_count", ()), 0.0)
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url)
        ids = enqueue(ctx, signal_id, rx.url, ["{}"] * 3)
        async with running_worker(ctx):
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids))
        enqueue(ctx, signal_id, rx.url, ["{}"] * 2)  # waiting, no worker
        with ctx.db.transaction() as tx:
            endpoint_store.open_circuit(tx, origin_of(rx.url), utcnow(), "test")
            # Endpoints waiting by someone's wish: the "queue not draining" alert must not blame
            # the workers for them.
            hub_store.set_paused(
                tx, "https://paused.example.com:443", paused=True, now=utcnow(), detail="by test"
            )
            endpoint_store.throttle(
                tx, "https://busy.example.com:443", utcnow() + timedelta(minutes=5), utcnow()
            )
            endpoint_store.throttle(
                tx, "https://was-busy.example.com:443", utcnow() - timedelta(minutes=5), utcnow()
            )
            tx.execute(
                insert(email_outbox).values(
                    recipients=["qa@example.com"], subject="s", body="b", status="failed", created_at=utcnow()
                )
            )
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)
    assert after[("qhook_deliveries_total", (("outcome", "succeeded"),))] == succeeded_before + 3
    assert after[("qhook_event_to_delivery_seconds_count", ())] == latency_before + 3
    assert after[("qhook_attempt_duration_seconds_count", ())] >= 3
    assert after[("qhook_queue_depth", (("status", "succeeded"),))] == 3
    assert after[("qhook_queue_depth", (("status", "pending"),))] == 2
    assert after[("qhook_queue_depth", (("status", "failed"),))] == 0
    assert after[("qhook_open_circuits", ())] == 1
    assert after[("qhook_waiting_endpoints", (("reason", "paused"),))] == 1
    assert after[("qhook_waiting_endpoints", (("reason", "throttled"),))] == 1  # not the one whose wait ended
    assert after[("qhook_emails", (("status", "failed"),))] == 1
    assert after[("qhook_emails", (("status", "pending"),))] == 0
    # The two waiting ones were due when enqueued: the oldest has waited since then.
    assert 0 < after[("qhook_oldest_due_seconds", ())] < 60
    with ctx.db.transaction() as tx:
        tx.execute(
            deliveries.update()
            .where(deliveries.c.status == "pending")
            .values(next_attempt_at=utcnow() + timedelta(hours=1))
        )
    assert samples((await client.get("/metrics")).text)[("qhook_oldest_due_seconds", ())] == 0


async def test_serve_metrics_answer_while_the_database_is_away(tmp_path: Path) -> None:
    """serve's /metrics answered 503 during an outage: the scrape failed, so its counters were
    lost and the documented alert ``qhook_database_up == 0`` never fired for serve processes."""
    closed = "postgresql+psycopg://qhook:secret@127.0.0.1:1/qhook"  # nothing listens on port 1
    away = open_context(Settings(database_url=closed, data_dir=tmp_path, secret_key=TEST_SECRET_KEY))  # type: ignore[arg-type]
    try:
        transport = httpx.ASGITransport(app=create_app(away))
        async with httpx.AsyncClient(transport=transport, base_url="http://qhook") as client:
            response = await client.get("/metrics")
    finally:
        away.db.dispose()
    assert response.status_code == 200, response.text
    found = samples(response.text)
    assert found[("qhook_database_up", ())] == 0
    assert not any(name == "qhook_queue_depth" for name, _ in found)
    assert ("qhook_deliveries_total", (("outcome", "succeeded"),)) in found  # counters still answer


async def test_a_redelivery_or_replay_is_no_event_to_delivery_delay(
    ctx: AppContext, client: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    """Replaying deliveries two days old put them in the +Inf bucket of event-to-delivery, and the
    documented 'slow end to end' alert fired for a routine replay. Each attempt says which it was."""
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url)
        [sent] = enqueue(ctx, signal_id, rx.url, ["{}"])
        async with running_worker(ctx):
            await until(lambda: delivery(ctx, sent).status == "succeeded")
            before = samples((await client.get("/metrics")).text)
            assert (await api.post(f"/api/v1/deliveries/{sent}/redeliver")).status_code == 200
            await until(lambda: len(rx.received) == 2)
            await until(lambda: delivery(ctx, sent).status == "succeeded")
            replayed = await api.post("/api/v1/deliveries/replay", json={"status": "succeeded"})
            assert replayed.json() == {"queued": 1}, replayed.text
            await until(lambda: len(rx.received) == 3)
            await until(lambda: delivery(ctx, sent).status == "succeeded")
        after = samples((await client.get("/metrics")).text)
    counted = ("qhook_deliveries_total", (("outcome", "succeeded"),))
    assert after[counted] == before[counted] + 2  # the redelivery and the replay are deliveries
    latency = ("qhook_event_to_delivery_seconds_count", ())
    assert after[latency] == before[latency]  # but no delay from their event
    shown = (await api.get(f"/api/v1/deliveries/{sent}")).json()
    assert [a["trigger"] for a in shown["attempts"]] == ["scheduled", "manual", "replay"]
