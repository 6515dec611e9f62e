"""Design invariants 2, 3 and 4 end to end, on SQLite and PostgreSQL, with real receivers.

2. A redelivery from the Hub sends the same bytes with the same ``webhook-id`` (fresh signature).
3. A worker that died holding leases loses nothing: the leases run out and another worker sends.
4. A throttled endpoint (429 + Retry-After) never delays deliveries to other endpoints.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import httpx
from aiohttp import web
from standardwebhooks import Webhook

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.store import endpoints as endpoint_store
from qhook.store import queue
from tests.support.delivery import (
    attempts_of,
    delivery,
    enqueue,
    make_signal,
    receiver,
    running_worker,
    until,
)
from tests.support.workflows import add_result, deliveries_of, make_set

SIGNING_SECRET = "whsec_" + "C2FVsBQIhrscChlQIMV+b5sSYspob7oD"


async def test_redelivery_from_the_hub_sends_the_same_bytes_and_webhook_id(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    async with receiver() as rx:
        set_id = await make_set(api)
        created = await api.post(
            "/api/v1/workflows",
            json={
                "name": "To ERP",
                "set_id": set_id,
                "triggers": {"entry": True},
                "signals": [{"type": "webhook", "url": rx.url, "secret": SIGNING_SECRET}],
            },
        )
        assert created.status_code == 201, created.text
        result_id = await add_result(api, set_id, batchnumber_="B-77", status_="released", ph_=6.5)
        [queued] = deliveries_of(ctx, result_id)
        async with running_worker(ctx) as worker:
            await until(lambda: delivery(ctx, queued.id).status == "succeeded")
            # The result changes afterwards: a redelivery must still send what was true at the event.
            changed = await api.patch(
                f"/api/v1/sets/{set_id}/results/{result_id}", json={"values": {"ph_": 9.9}}
            )
            assert changed.status_code == 200, changed.text
            await asyncio.sleep(1.1)  # a later second: the new timestamp (and so signature) differs
            answer = await api.post(f"/api/v1/deliveries/{queued.id}/redeliver")
            assert answer.status_code == 200, answer.text
            assert answer.json()["webhook_id"] == queued.webhook_id
            worker.wake()
            await until(lambda: len(rx.received) >= 2)
            await until(lambda: len(attempts_of(ctx, queued.id)) == 2)
        detail = await api.get(f"/api/v1/deliveries/{queued.id}")

    first, second = rx.received[:2]
    assert second.body == first.body  # byte for byte
    assert second.body == queued.body.encode()
    assert second.headers["webhook-id"] == first.headers["webhook-id"] == queued.webhook_id
    assert int(second.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    assert second.headers["webhook-signature"] != first.headers["webhook-signature"]
    verifier = Webhook(SIGNING_SECRET)
    payloads = [verifier.verify(r.body, r.headers) for r in (first, second)]
    assert payloads[0] == payloads[1]
    assert payloads[1]["results"]["ph_"] == 6.5  # not the later 9.9
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["status"] == "succeeded" and body["webhook_id"] == queued.webhook_id
    assert body["request"]["body"] == first.body.decode()
    assert [(a["number"], a["trigger"]) for a in body["attempts"]] == [(1, "scheduled"), (2, "manual")]
    assert all(a["status_code"] == 200 for a in body["attempts"])


async def test_leases_of_a_dead_worker_run_out_and_nothing_is_lost(ctx: AppContext) -> None:
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url)
        ids = enqueue(ctx, signal_id, rx.url, [f'{{"n": {i}}}' for i in range(25)])
        lease_s = 2.0
        claimed_at = time.monotonic()
        now = utcnow()
        with ctx.db.transaction() as tx:
            # A worker takes every delivery, then dies before sending or recording anything.
            taken = queue.claim(
                tx,
                owner="dead",
                now=now,
                lease_until=now + timedelta(seconds=lease_s),
                limit=100,
                lane="first",
            )
        assert sorted(d.id for d in taken) == sorted(ids)
        async with running_worker(ctx):
            await asyncio.sleep(lease_s - 0.7)
            # Still leased: the living worker must not send them twice while the owner may live.
            assert rx.received == []
            assert all(delivery(ctx, i).lease_owner == "dead" for i in ids)
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids), timeout=15)
        taken_over_after = min(r.at for r in rx.received) - claimed_at

    assert taken_over_after >= lease_s - 0.3  # not before the lease ran out
    sent = sorted(r.body.decode() for r in rx.received)
    assert sent == sorted(f'{{"n": {i}}}' for i in range(25))  # each one, none lost, none twice
    for delivery_id in ids:
        row = delivery(ctx, delivery_id)
        assert row.lease_owner is None and row.attempt_count == 1
        assert [a.status_code for a in attempts_of(ctx, delivery_id)] == [200]


async def test_throttled_endpoint_does_not_delay_other_endpoints(ctx: AppContext) -> None:
    async def throttled(request: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "30"}, text="slow down")

    async with receiver(throttled) as a, receiver() as b:
        signal_a = make_signal(ctx, a.url, max_in_flight=1)
        signal_b = make_signal(ctx, b.url)
        # A's deliveries are older, so they come first in every claim.
        a_ids = enqueue(ctx, signal_a, a.url, [f'{{"a": {i}}}' for i in range(30)])
        b_ids = enqueue(ctx, signal_b, b.url, [f'{{"b": {i}}}' for i in range(30)], result_id=2)
        started = time.monotonic()
        async with running_worker(ctx):
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in b_ids), timeout=10)
            b_done_after = time.monotonic() - started
            await asyncio.sleep(1.0)  # more polls and ticks: A must still not be asked again
            a_rows = [delivery(ctx, i) for i in a_ids]

    assert b_done_after < 5, b_done_after
    assert len(b.received) == 30
    assert len(a.received) == 1, f"{len(a.received)} requests reached the throttled endpoint"
    first_try = a.received[0]
    tried = [r for r in a_rows if r.attempt_count > 0]
    assert len(tried) == 1 and tried[0].status == "retrying" and tried[0].last_status_code == 429
    assert tried[0].next_attempt_at.timestamp() >= time.time() - (time.monotonic() - first_try.at) + 29
    assert all(r.status == "pending" and r.attempt_count == 0 for r in a_rows if r is not tried[0])
    with ctx.db.reading() as tx:
        state = endpoint_store.get(tx, a_rows[0].endpoint)
    assert state is not None and state.throttled_until is not None
    assert state.throttled_until > utcnow() + timedelta(seconds=25)
