"""Endpoint decisions shared by several workers through the database: the circuit breaker and rate limits."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from qhook.clock import utcnow
from qhook.context import AppContext, open_context
from qhook.domain.urls import origin_of
from qhook.settings import Settings
from qhook.store import endpoints as endpoint_store
from tests.conftest import TEST_SECRET_KEY, fresh_postgres_url
from tests.support import pg
from tests.support.delivery import Received, delivery, enqueue, make_signal, receiver, running_worker, until


@pytest.fixture
def pg_ctx(pg_server: pg.PgServer, tmp_path: Path) -> Iterator[AppContext]:
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=fresh_postgres_url(pg_server),
        secret_key=TEST_SECRET_KEY,  # type: ignore[arg-type]
        allow_http=True,
        allowed_target_networks="127.0.0.0/8",
        poll_interval_s=0.2,
    )
    context = open_context(settings)
    yield context
    context.db.dispose()


def circuit_state(ctx: AppContext, origin: str) -> str:
    with ctx.db.reading() as tx:
        state = endpoint_store.get(tx, origin)
    return state.circuit_state if state else "closed"


def all_final(ctx: AppContext, ids: list[int]) -> bool:
    return all(delivery(ctx, i).status in ("failed", "succeeded") for i in ids)


def most_in_any_window(received: list[Received], period_s: float) -> int:
    """The largest number of arrivals inside any window of ``period_s`` seconds."""
    times = sorted(r.at for r in received)
    best = 0
    start = 0
    for end, at in enumerate(times):
        while at - times[start] >= period_s:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.mark.postgres
async def test_two_workers_each_seeing_half_the_failures_open_the_circuit(pg_ctx: AppContext) -> None:
    async def failing(request: web.Request) -> web.Response:
        return web.Response(status=500, text="down")

    async with receiver(failing) as rx:
        origin = origin_of(rx.url)
        signal_id = make_signal(pg_ctx, rx.url, max_attempts=1, error_email="ops@example.com")
        first_half = enqueue(pg_ctx, signal_id, rx.url, ["{}"] * 6)
        async with running_worker(pg_ctx, owner="worker-a") as worker_a:
            await until(lambda: all(delivery(pg_ctx, i).status == "failed" for i in first_half))
            assert worker_a.gates.get(origin).window.failures <= 6
        # Six failures of ten needed: still closed.
        assert circuit_state(pg_ctx, origin) == "closed"

        second_half = enqueue(pg_ctx, signal_id, rx.url, ["{}"] * 6)
        async with running_worker(pg_ctx, owner="worker-b") as worker_b:
            await until(lambda: all(delivery(pg_ctx, i).status == "failed" for i in second_half))
            # Worker b saw six failures only; the twelve of both workers in the database open it.
            assert worker_b.gates.get(origin).window.attempts <= 6
            await until(lambda: circuit_state(pg_ctx, origin) == "open", timeout=5)
            later = enqueue(pg_ctx, signal_id, rx.url, ["{}"] * 3)
            worker_b.wake()
            await until(lambda: all(delivery(pg_ctx, i).status == "held" for i in later), timeout=5)
    assert len(rx.received) == 12  # held deliveries burnt no attempts
    assert all(delivery(pg_ctx, i).attempt_count == 0 for i in later)
    with pg_ctx.db.reading() as tx:
        [entry] = [e for e in endpoint_store.log_entries(tx, origin) if e.change == "circuit_open"]
    assert entry.detail == "12 of 12 attempts failed in the last 5 minutes (all workers)"


@pytest.mark.postgres
async def test_a_mostly_healthy_endpoint_stays_closed_across_workers(pg_ctx: AppContext) -> None:
    answers = iter([500, 500, 200] * 10)  # 67 % failures: below the 70 % threshold

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=next(answers))

    async with receiver(handler) as rx:
        origin = origin_of(rx.url)
        signal_id = make_signal(pg_ctx, rx.url, max_attempts=1, max_in_flight=1)
        for owner in ("worker-a", "worker-b"):
            ids = enqueue(pg_ctx, signal_id, rx.url, ["{}"] * 9)
            async with running_worker(pg_ctx, owner=owner):
                await until(functools.partial(all_final, pg_ctx, ids))
    assert len(rx.received) == 18
    assert circuit_state(pg_ctx, origin) == "closed"


async def test_rate_limit_per_signal_holds_in_any_window_and_burns_no_attempt(ctx: AppContext) -> None:
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url, rate_limit="5/second")
        ids = enqueue(ctx, signal_id, rx.url, [f'{{"n": {i}}}' for i in range(20)])
        async with running_worker(ctx):
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids), timeout=20)
    assert len(rx.received) == 20  # nothing lost, nothing twice
    assert sorted(rx.bodies()) == sorted(f'{{"n": {i}}}'.encode() for i in range(20))
    assert most_in_any_window(rx.received, 1.0) <= 5
    assert all(delivery(ctx, i).attempt_count == 1 for i in ids)  # waiting burnt no attempt
    span = max(r.at for r in rx.received) - min(r.at for r in rx.received)
    assert span >= 3.0  # 20 at 5/second: at least three full seconds between first and last


async def test_rate_limit_per_host_applies_to_every_signal(ctx: AppContext) -> None:
    async with receiver() as rx:
        with ctx.db.transaction() as tx:
            endpoint_store.set_limits(
                tx, origin_of(rx.url), rate_limit="4/second", max_in_flight=None, now=utcnow()
            )
        signals = [make_signal(ctx, rx.url), make_signal(ctx, rx.url)]
        ids = [i for s in signals for i in enqueue(ctx, s, rx.url, ["{}"] * 6)]
        async with running_worker(ctx):
            await until(lambda: all(delivery(ctx, i).status == "succeeded" for i in ids), timeout=20)
    assert len(rx.received) == 12
    assert most_in_any_window(rx.received, 1.0) <= 4
    assert all(delivery(ctx, i).attempt_count == 1 for i in ids)


@pytest.mark.postgres
async def test_rate_limit_is_shared_by_two_workers(pg_ctx: AppContext) -> None:
    async with receiver() as rx:
        signal_id = make_signal(pg_ctx, rx.url, rate_limit="5/second")
        ids = enqueue(pg_ctx, signal_id, rx.url, [f'{{"n": {i}}}' for i in range(20)])
        async with (
            running_worker(pg_ctx, owner="worker-a", batch_size=4),
            running_worker(pg_ctx, owner="worker-b", batch_size=4),
        ):
            await until(lambda: all(delivery(pg_ctx, i).status == "succeeded" for i in ids), timeout=20)
    assert len(rx.received) == 20
    assert most_in_any_window(rx.received, 1.0) <= 5
    assert all(delivery(pg_ctx, i).attempt_count == 1 for i in ids)
