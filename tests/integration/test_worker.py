"""The delivery worker against real HTTP receivers on 127.0.0.1, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

from aiohttp import web

from qhook.clock import utcnow as ctx_now
from qhook.context import AppContext
from qhook.delivery.attempt import CIRCUIT_FAILURE_KINDS
from qhook.services import auth_profiles, hub
from qhook.store import endpoints as endpoint_store
from qhook.store import queue as queue_store
from tests.support.delivery import (
    attempts_of,
    delivery,
    enqueue,
    make_due,
    make_signal,
    receiver,
    running_worker,
    until,
)


async def test_success_sends_frozen_body_signed_and_records_attempt(ctx: AppContext) -> None:
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url, headers={"X-Plant": "Venlo"})
        body = json.dumps({"@id": 17, "batchnumber_": "B-1234"})
        [delivery_id] = enqueue(ctx, signal_id, rx.url, [body])
        async with running_worker(ctx):
            row = await until(lambda: (d := delivery(ctx, delivery_id)).status == "succeeded" and d)
    assert rx.bodies() == [body.encode()]
    headers = rx.received[0].headers
    assert headers["webhook-id"] == row.webhook_id
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["X-Plant"] == "Venlo"
    assert headers["Content-Type"] == "application/json"
    assert row.attempt_count == 1 and row.delivered_at is not None and row.lease_owner is None
    [attempt] = attempts_of(ctx, delivery_id)
    assert attempt.status_code == 200 and attempt.error_kind is None and attempt.hint is None
    assert attempt.request_headers["webhook-id"] == row.webhook_id


async def test_a_binary_answer_is_recorded_and_its_batch_is_not_sent_again(ctx: AppContext) -> None:
    """A receiver answering with NUL bytes (an image, gzip without its header): PostgreSQL's text
    refuses NUL, so the whole batch's write failed, its leases ran out and all of it was sent
    again, forever. The stored answer shows U+FFFD where the NUL was, as for any undecodable byte."""

    async def binary(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", content_type="image/png")

    async with receiver(binary) as rx:
        signal_id = make_signal(ctx, rx.url)
        ids = enqueue(ctx, signal_id, rx.url, [f'{{"n": {n}}}' for n in range(5)])
        async with running_worker(ctx):
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids), timeout=10)
    assert len(rx.received) == 5
    for delivery_id in ids:
        [attempt] = attempts_of(ctx, delivery_id)
        assert attempt.status_code == 200
        assert attempt.response_body == "\ufffdPNG\r\n\x1a\n\ufffd\ufffd\ufffd\rIHDR"


async def test_a_latin1_header_is_recorded_and_sent_once(ctx: AppContext) -> None:
    """Older servers send header values in Latin-1; aiohttp reads those bytes as lone surrogates,
    which no UTF-8 encoder takes: the outcome could not be written, and the delivery was sent
    again each time its lease ran out."""
    received: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        received.append(await reader.readexactly(length))
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Server: caf\xe9\r\nConnection: close\r\n\r\nok"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    try:
        signal_id = make_signal(ctx, url)
        ids = enqueue(ctx, signal_id, url, [f'{{"n": {n}}}' for n in range(3)])
        async with running_worker(ctx):
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids), timeout=10)
    finally:
        server.close()
    assert sorted(received) == [f'{{"n": {n}}}'.encode() for n in range(3)]
    for delivery_id in ids:
        [attempt] = attempts_of(ctx, delivery_id)
        assert attempt.response_headers is not None and attempt.response_headers["X-Server"] == "café"


async def test_500_then_success_retries_with_same_webhook_id(ctx: AppContext) -> None:
    answers = [500, 200]

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=answers.pop(0), text="boom")

    async with receiver(handler) as rx:
        signal_id = make_signal(ctx, rx.url)
        [delivery_id] = enqueue(ctx, signal_id, rx.url, ['{"n": 1}'])
        async with running_worker(ctx):
            first = await until(lambda: (d := delivery(ctx, delivery_id)).status == "retrying" and d)
            assert first.attempt_count == 1 and first.last_status_code == 500
            assert first.next_attempt_at.timestamp() - time.time() > 3  # backoff ~5 s ± 20 %
            make_due(ctx)
            await until(lambda: delivery(ctx, delivery_id).status == "succeeded")
    ids = {r.headers["webhook-id"] for r in rx.received}
    assert len(rx.received) == 2 and len(ids) == 1 and rx.bodies() == [b'{"n": 1}'] * 2
    tries = attempts_of(ctx, delivery_id)
    assert [a.status_code for a in tries] == [500, 200]
    assert "500" in tries[0].hint


async def test_429_retry_after_pauses_whole_endpoint(ctx: AppContext) -> None:
    answers = [web.Response(status=429, headers={"Retry-After": "2"})]

    async def handler(request: web.Request) -> web.Response:
        return answers.pop(0) if answers else web.Response(text="ok")

    async with receiver(handler) as rx:
        signal_id = make_signal(ctx, rx.url)
        [first] = enqueue(ctx, signal_id, rx.url, ['{"n": 1}'])
        async with running_worker(ctx) as worker:
            await until(lambda: delivery(ctx, first).status == "retrying")
            [second] = enqueue(ctx, signal_id, rx.url, ['{"n": 2}'])
            worker.wake()
            await until(lambda: delivery(ctx, second).status == "succeeded", timeout=8)
    assert rx.received[1].at - rx.received[0].at >= 1.9  # nothing went before Retry-After ran out
    row = delivery(ctx, first)
    assert row.next_attempt_at.timestamp() - rx.received[0].at > 0  # its own retry waits too
    with ctx.db.reading() as tx:
        state = endpoint_store.get(tx, row.endpoint)
        log = endpoint_store.log_entries(tx, row.endpoint)
    assert state is not None and state.throttled_until is not None
    assert [e.change for e in log] == ["throttled"]


async def test_resume_ends_a_retry_after_wait_at_once(ctx: AppContext) -> None:
    """The ERP asked for an hour; its team fixed it and an admin pressed Resume ("Send now"): the
    waiting deliveries go now, the one that got the 503 too (it waited out the hour before)."""
    answers = [web.Response(status=503, headers={"Retry-After": "3600"})]

    async def handler(request: web.Request) -> web.Response:
        return answers.pop(0) if answers else web.Response(text="ok")

    async with receiver(handler) as rx:
        signal_id = make_signal(ctx, rx.url)
        [first] = enqueue(ctx, signal_id, rx.url, ['{"n": 1}'])
        origin = delivery(ctx, first).endpoint
        async with running_worker(ctx) as worker:
            await until(lambda: delivery(ctx, first).status == "retrying")
            [second] = enqueue(ctx, signal_id, rx.url, ['{"n": 2}'])
            worker.wake()
            await until(lambda: worker.gates.get(origin).blocked)  # the shared wait reached this worker
            assert len(rx.received) == 1
            hub.set_endpoint_paused(ctx, origin, paused=False, actor="olga")
            await until(lambda: delivery(ctx, second).status == "succeeded", timeout=8)
            await until(lambda: delivery(ctx, first).status == "succeeded", timeout=8)
    assert delivery(ctx, first).attempt_count == 2
    with ctx.db.reading() as tx:
        state = endpoint_store.get(tx, origin)
        log = endpoint_store.log_entries(tx, origin)
    assert state is not None and state.throttled_until is None and not state.paused
    assert [e.change for e in log] == ["resumed", "throttled"]  # newest first
    resumed = log[0]
    assert resumed.detail is not None and "by olga" in resumed.detail
    assert "Retry-After wait until" in resumed.detail
    assert "is dropped and 1 retry waiting for it go now" in resumed.detail


async def test_probe_now_sends_the_held_deliveries_without_waiting_out_the_cool_off(
    ctx: AppContext, api: Any
) -> None:
    """The receiver was fixed a minute into a ten-minute cool-off: Probe now sends one held
    delivery, it succeeds, the circuit closes and the rest follow."""
    from urllib.parse import quote

    from qhook.store import queue as queue_store

    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url)
        ids = enqueue(ctx, signal_id, rx.url, ['{"n": 1}', '{"n": 2}', '{"n": 3}'])
        origin = delivery(ctx, ids[0]).endpoint
        closed = await api.post(f"/api/v1/endpoints/{quote(origin, safe='')}/probe")
        assert closed.status_code == 409 and "is not open (closed)" in closed.json()["error"]
        with ctx.db.transaction() as tx:
            endpoint_store.open_circuit(tx, origin, ctx_now(), "9 of 10 attempts failed")
            queue_store.hold_endpoint(tx, origin, ctx_now())
        async with running_worker(ctx, cool_off_s=600):
            await asyncio.sleep(1.5)
            assert rx.received == [] and {delivery(ctx, i).status for i in ids} == {"held"}
            asked = await api.post(f"/api/v1/endpoints/{quote(origin, safe='')}/probe")
            assert asked.status_code == 200, asked.text
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids), timeout=8)
    with ctx.db.reading() as tx:
        changes = [e.change for e in endpoint_store.log_entries(tx, origin)]
        state = endpoint_store.get(tx, origin)
    assert changes == ["circuit_closed", "probe_requested", "circuit_open"]
    assert state is not None and state.circuit_state == "closed"
    assert len(rx.received) == 3


async def test_404_fails_at_once_with_hint(ctx: AppContext) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no such route")

    async with receiver(handler) as rx:
        signal_id = make_signal(ctx, rx.url)
        [delivery_id] = enqueue(ctx, signal_id, rx.url, ["{}"])
        async with running_worker(ctx):
            row = await until(lambda: (d := delivery(ctx, delivery_id)).status == "failed" and d)
    assert row.attempt_count == 1 and row.last_status_code == 404 and "check the URL" in row.hint
    [attempt] = attempts_of(ctx, delivery_id)
    assert attempt.response_body == "no such route"


async def test_timeout_is_retried_with_hint(ctx: AppContext) -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(text="late")

    async with receiver(handler) as rx:
        signal_id = make_signal(ctx, rx.url, timeout_s=1)
        [delivery_id] = enqueue(ctx, signal_id, rx.url, ["{}"])
        async with running_worker(ctx):
            row = await until(lambda: (d := delivery(ctx, delivery_id)).status == "retrying" and d)
    assert row.last_error_kind == "timeout" and "did not answer" in row.hint


async def test_connection_refused_is_retried_with_hint(ctx: AppContext) -> None:
    async with receiver() as rx:
        url = rx.url
    signal_id = make_signal(ctx, url)  # the port is closed now
    [delivery_id] = enqueue(ctx, signal_id, url, ["{}"])
    async with running_worker(ctx):
        row = await until(lambda: (d := delivery(ctx, delivery_id)).status == "retrying" and d)
    assert row.last_error_kind == "connect" and "accepted the connection" in row.hint


async def test_max_attempts_then_failed_nothing_deleted(ctx: AppContext) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=503)

    async with receiver(handler) as rx:
        signal_id = make_signal(ctx, rx.url, max_attempts=2)
        [delivery_id] = enqueue(ctx, signal_id, rx.url, ["{}"])
        async with running_worker(ctx):
            await until(lambda: delivery(ctx, delivery_id).status == "retrying")
            make_due(ctx)
            row = await until(lambda: (d := delivery(ctx, delivery_id)).status == "failed" and d)
    assert row.attempt_count == 2 and "gave up" in row.hint.lower()
    assert len(attempts_of(ctx, delivery_id)) == 2


async def test_ordered_signal_keeps_order_per_result_without_holding_others(ctx: AppContext) -> None:
    failed_once: set[str] = set()

    async def handler(request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        if body == '"a1"' and body not in failed_once:
            failed_once.add(body)
            return web.Response(status=500)
        return web.Response(text="ok")

    async with receiver(handler) as rx:
        signal_id = make_signal(ctx, rx.url, ordered=True)
        a = enqueue(ctx, signal_id, rx.url, ['"a1"', '"a2"', '"a3"'], result_id=1, ordered=True)
        b = enqueue(ctx, signal_id, rx.url, ['"b1"', '"b2"'], result_id=2, ordered=True)
        async with running_worker(ctx) as worker:
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in b))
            await asyncio.sleep(0.3)
            assert delivery(ctx, a[0]).status == "retrying"
            assert [delivery(ctx, i).status for i in a[1:]] == ["pending", "pending"]
            make_due(ctx)
            worker.wake()
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in a))
    seen = [body.decode() for body in rx.bodies()]
    assert [s for s in seen if s.startswith('"a')] == ['"a1"', '"a1"', '"a2"', '"a3"']
    assert [s for s in seen if s.startswith('"b')] == ['"b1"', '"b2"']
    assert seen.index('"b2"') < seen.index('"a2"')


async def test_dead_endpoint_does_not_slow_healthy_one(ctx: AppContext) -> None:
    async def never(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    async with receiver(never) as dead, receiver() as healthy:
        dead_signal = make_signal(ctx, dead.url, timeout_s=20)
        healthy_signal = make_signal(ctx, healthy.url)
        enqueue(ctx, dead_signal, dead.url, ["{}"] * 40)
        async with running_worker(ctx, batch_size=20) as worker:
            await until(lambda: len(dead.received) >= 10)
            started = time.monotonic()
            ids = enqueue(ctx, healthy_signal, healthy.url, ["{}"] * 40)
            worker.wake()
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids), timeout=5)
            elapsed = time.monotonic() - started
            assert len(dead.received) == 10  # its cap, the rest wait without blocking anyone
    assert elapsed < 3


async def test_retry_backlog_does_not_delay_fresh_events(ctx: AppContext) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.1)
        return web.Response(text="ok")

    async with receiver(slow) as rx:
        signal_id = make_signal(ctx, rx.url, max_in_flight=2)
        backlog = enqueue(ctx, signal_id, rx.url, ['"retry"'] * 40)
        from tests.support.delivery import set_retrying

        set_retrying(ctx, backlog)
        async with running_worker(ctx) as worker:
            await until(lambda: len(rx.received) >= 4)
            [fresh] = enqueue(ctx, signal_id, rx.url, ['"fresh"'])
            worker.wake()
            await until(lambda: delivery(ctx, fresh).status == "succeeded", timeout=5)
            retries_done = sum(1 for r in rx.received if r.body == b'"retry"')
    assert retries_done < 20  # the fresh event overtook most of the backlog


async def test_retry_after_answers_pause_the_endpoint_and_never_open_its_circuit(ctx: AppContext) -> None:
    """A receiver answering 503 with Retry-After is alive and asking for time. Ten such answers
    opened the circuit, held every delivery for the cool-off and mailed "stopped answering"."""
    answered = 0

    async def busy_then_ok(request: web.Request) -> web.Response:
        nonlocal answered
        answered += 1
        if answered <= 12:
            return web.Response(status=503, headers={"Retry-After": "1"}, text="maintenance")
        return web.Response(text="ok")

    async with receiver(busy_then_ok) as rx:
        signal_id = make_signal(ctx, rx.url, max_attempts=20)
        ids = enqueue(ctx, signal_id, rx.url, ["{}"] * 12)
        origin = delivery(ctx, ids[0]).endpoint
        async with running_worker(ctx, cool_off_s=600):
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids), timeout=20)
    with ctx.db.reading() as tx:
        changes = {e.change for e in endpoint_store.log_entries(tx, origin)}
        assert (
            endpoint_store.circuit_counts(tx, origin, ctx_now() - timedelta(hours=1), CIRCUIT_FAILURE_KINDS)[
                1
            ]
            == 0
        )
    assert "throttled" in changes and "circuit_open" not in changes
    assert answered >= 24 - 12


def test_a_probe_waits_for_the_receivers_retry_after(ctx: AppContext) -> None:
    origin = "https://erp.example.com:443"
    now = ctx_now()
    cool_off, probe_timeout = timedelta(seconds=60), timedelta(seconds=30)
    with ctx.db.transaction() as tx:
        endpoint_store.open_circuit(tx, origin, now - timedelta(minutes=5), "10 of 10 attempts failed")
        endpoint_store.throttle(tx, origin, now + timedelta(minutes=2), now)
        assert endpoint_store.probe_candidates(tx, now, cool_off, probe_timeout) == []
        later = now + timedelta(minutes=2, seconds=1)
        assert endpoint_store.probe_candidates(tx, later, cool_off, probe_timeout) == [origin]


async def test_circuit_opens_holds_without_burning_attempts_and_probe_closes(ctx: AppContext) -> None:
    healthy = False

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="ok") if healthy else web.Response(status=500)

    async with receiver(handler) as rx:
        signal_id = make_signal(ctx, rx.url, max_in_flight=1)
        ids = enqueue(ctx, signal_id, rx.url, ["{}"] * 14)
        async with running_worker(ctx, cool_off_s=1.5) as worker:
            await until(lambda: all(delivery(ctx, i).status == "held" for i in ids))
            rows = [delivery(ctx, i) for i in ids]
            assert sum(r.attempt_count for r in rows) == 10  # held ones burnt nothing
            origin = rows[0].endpoint
            with ctx.db.reading() as tx:
                state = endpoint_store.get(tx, origin)
            assert state is not None and state.circuit_state == "open"
            healthy = True
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids), timeout=10)
            assert worker.gates.get(origin).blocked is False
    with ctx.db.reading() as tx:
        changes = [e.change for e in reversed(endpoint_store.log_entries(tx, origin))]
    assert changes == ["circuit_open", "circuit_closed"]
    assert len(rx.received) == 10 + 14  # ten failures, then each delivery once


async def test_oauth2_token_refreshed_once_on_401_and_every_call_recorded(ctx: AppContext) -> None:
    issued: list[str] = []

    async def token_endpoint(request: web.Request) -> web.Response:
        issued.append(f"token-{len(issued) + 1}")
        return web.json_response({"access_token": issued[-1], "token_type": "Bearer", "expires_in": 3600})

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/token":
            return await token_endpoint(request)
        # The first token was revoked early by the receiver.
        ok = request.headers.get("Authorization") == "Bearer token-2"
        return web.Response(status=200 if ok else 401)

    async with receiver(handler) as rx:
        token_url = rx.url.replace("/hook", "/token")
        profile = auth_profiles.create_profile(
            ctx,
            {
                "name": "erp",
                "type": "oauth2_client_credentials",
                "token_url": token_url,
                "client_id": "qhook",
                "client_secret": "s3cret",
                "allowed_domains": ["127.0.0.1"],
            },
            actor="test",
        )
        signal_id = make_signal(ctx, rx.url, auth_profile_id=profile.id)
        ids = enqueue(ctx, signal_id, rx.url, ["{}", "{}", "{}"])
        async with running_worker(ctx):
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids))
    assert issued == ["token-1", "token-2"]  # one refresh, shared by every delivery
    recorded = 0
    for delivery_id in ids:
        *refused, attempt = attempts_of(ctx, delivery_id)
        # A call refused with the old token is an attempt of its own (every call the receiver saw
        # is in the Hub), and the fresh token's call follows at once, in the same turn.
        assert [a.status_code for a in refused] in ([], [401])
        assert attempt.status_code == 200 and attempt.number == len(refused) + 1
        assert attempt.request_headers["Authorization"] == "[redacted]"
        recorded += len(refused) + 1
    hooks = [r for r in rx.received if r.path == "/hook"]
    assert recorded == len(hooks) > len(ids)


def test_the_circuit_counts_by_the_retry_after_header_not_a_value_naming_it(ctx: AppContext) -> None:
    """A receiver exposing "Access-Control-Expose-Headers: Retry-After" made all its 5xx invisible
    to the circuit across workers (the test read the headers as text)."""
    from sqlalchemy import insert

    from qhook.store.tables import attempts
    from tests.support.hub_data import add_delivery

    origin = "https://erp.example.com:443"
    now = ctx_now()
    answers = [
        {"Retry-After": "30"},  # asked for time: not a failure
        {"retry-after": "30"},
        {"Access-Control-Expose-Headers": "Retry-After"},  # a plain 503: a failure
        None,
    ]
    for headers in answers:
        delivery_id = add_delivery(ctx.db, status="retrying", endpoint=origin)
        with ctx.db.transaction() as tx:
            tx.execute(
                insert(attempts).values(
                    delivery_id=delivery_id,
                    number=1,
                    trigger="scheduled",
                    started_at=now,
                    request_headers={},
                    status_code=503,
                    response_headers=headers,
                    error_kind="http_status",
                )
            )
    with ctx.db.reading() as tx:
        tried, failed = endpoint_store.circuit_counts(
            tx, origin, now - timedelta(minutes=1), CIRCUIT_FAILURE_KINDS
        )
    assert (tried, failed) == (2, 2)


async def test_failed_probes_do_not_use_up_the_probed_deliverys_attempts(ctx: AppContext) -> None:
    """Every probe of an open circuit sent the endpoint's oldest held delivery. Its failures
    counted as attempts, so after ``max_attempts`` probes it was failed for good while the receiver
    was down (one delivery every ~11 minutes of an outage, at the defaults), and the next was
    probed. Failed probes now use up no attempt, and each puts its delivery's next try off, so the
    next probe takes another delivery (one the receiver always refuses does not keep the circuit
    open for the rest). The Endpoints page keeps saying since when the circuit is open."""
    healthy = False

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="ok") if healthy else web.Response(status=503)

    async with receiver(handler) as rx:
        signal_id = make_signal(ctx, rx.url, max_attempts=2)
        ids = enqueue(ctx, signal_id, rx.url, ['{"n": 1}', '{"n": 2}', '{"n": 3}'])
        origin = delivery(ctx, ids[0]).endpoint
        opened = ctx_now() - timedelta(minutes=5)
        with ctx.db.transaction() as tx:
            endpoint_store.open_circuit(tx, origin, opened, "10 of 10 attempts failed")
            queue_store.hold_endpoint(tx, origin, opened)
        async with running_worker(ctx, cool_off_s=0.2):
            await until(lambda: len(rx.received) >= 6, timeout=15)
            rows = {i: _probe_counts(ctx, i) for i in ids}
            assert all(status in ("held", "retrying") for status, _, _ in rows.values()), rows
            assert all(tries == failed for _, tries, failed in rows.values()), rows  # all were probes
            assert sum(1 for _, tries, _ in rows.values() if tries) >= 2, rows  # not always the oldest
            assert max(tries for _, tries, _ in rows.values()) >= 2  # past max_attempts, not failed
            [summary] = [e for e in hub.endpoint_summaries(ctx) if e.origin == origin]
            assert summary.circuit_open_since == opened
            healthy = True
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids), timeout=10)
    probed = [a for i in ids for a in attempts_of(ctx, i) if a.status_code == 503]
    assert len(probed) >= 6 and all(a.hint and a.trigger == "probe" for a in probed)
    for delivery_id in ids:
        numbers = [a.number for a in attempts_of(ctx, delivery_id)]
        assert numbers == list(range(1, len(numbers) + 1))


def _probe_counts(ctx: AppContext, delivery_id: int) -> tuple[str, int, int]:
    from sqlalchemy import select

    from qhook.store.tables import deliveries

    with ctx.db.reading() as tx:
        row = tx.execute(
            select(deliveries.c.status, deliveries.c.attempt_count, deliveries.c.probe_failures).where(
                deliveries.c.id == delivery_id
            )
        ).one()
    return row.status, row.attempt_count, row.probe_failures


async def test_a_delivery_probed_many_times_keeps_its_own_retries(ctx: AppContext) -> None:
    """After a long outage a delivery had hundreds of failed probes among its attempts; its first
    ordinary failure after the circuit closed failed it for good ("gave up after 301 attempts")."""
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=503) if calls == 1 else web.Response(text="ok")

    async with receiver(handler) as rx:
        signal_id = make_signal(ctx, rx.url, max_attempts=3)
        [delivery_id] = enqueue(ctx, signal_id, rx.url, ['{"n": 1}'])
        from sqlalchemy import update

        from qhook.store.tables import deliveries

        with ctx.db.transaction() as tx:  # as left by 40 failed probes
            tx.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id)
                .values(attempt_count=40, probe_failures=40)
            )
        async with running_worker(ctx):
            await until(lambda: _probe_counts(ctx, delivery_id)[1] == 41)
            status, tries, failed = _probe_counts(ctx, delivery_id)
            assert status == "retrying" and failed == 40, (status, tries, failed)


async def test_a_probe_refused_for_its_own_message_closes_the_circuit(ctx: AppContext) -> None:
    """A 4xx answer is about one message: the endpoint is up. The probe failed, the circuit stayed
    open and every other delivery waited behind the one the receiver refuses."""

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(status=422, text="bad batch") if b'"n": 1' in body else web.Response(text="ok")

    async with receiver(handler) as rx:
        signal_id = make_signal(ctx, rx.url)
        ids = enqueue(ctx, signal_id, rx.url, ['{"n": 1}', '{"n": 2}', '{"n": 3}'])
        origin = delivery(ctx, ids[0]).endpoint
        with ctx.db.transaction() as tx:
            endpoint_store.open_circuit(tx, origin, ctx_now(), "10 of 10 attempts failed")
            queue_store.hold_endpoint(tx, origin, ctx_now())
        async with running_worker(ctx, cool_off_s=0.2):
            await until(
                lambda: [delivery(ctx, i).status for i in ids] == ["failed", "succeeded", "succeeded"]
            )
    with ctx.db.reading() as tx:
        [closed, *_] = endpoint_store.log_entries(tx, origin)
    assert (
        closed.change == "circuit_closed" and closed.detail == "probe answered HTTP 422: the endpoint is up"
    )
    assert len(rx.received) == 3
