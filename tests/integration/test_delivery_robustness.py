"""Gaps between what saves and what sends, on SQLite and PostgreSQL: bad signing secrets, max_age.

A value accepted when a workflow is saved must send; and whatever goes wrong inside qhook while one
delivery is prepared or sent becomes a recorded attempt, never a crash that leaves no trace.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from aiohttp import web
from sqlalchemy import select, update

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.domain import signing
from qhook.store.tables import deliveries, signals
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
from tests.support.workflows import add_result, make_set

# Each saved fine before (URL-safe characters, a length base64 cannot have) and then broke signing.
BAD_SECRETS = ["whsec_abcdefgh-ijklmnop", "whsec_abcdefgh_ijklmnop", "whsec_" + "A" * 17]


def _store_secret(ctx: AppContext, signal_id: int, secret: str) -> None:
    """A secret as an older release (or a hand-edited database) may have stored it."""
    with ctx.db.transaction() as tx:
        tx.execute(
            update(signals).where(signals.c.id == signal_id).values(secret_enc=ctx.box.encrypt(secret))
        )


def _all_failed(ctx: AppContext, ids: list[int]) -> list[Any] | None:
    rows = [delivery(ctx, i) for i in ids]
    return rows if all(r.status == "failed" for r in rows) else None


def _webhook(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "webhook", "url": url, **extra}


@pytest.mark.parametrize("secret", BAD_SECRETS)
async def test_workflow_save_refuses_a_secret_that_cannot_sign(api: httpx.AsyncClient, secret: str) -> None:
    set_id = await make_set(api)
    doc = {"name": "wf", "set_id": set_id, "triggers": {"entry": True}}
    response = await api.post(
        "/api/v1/workflows", json={**doc, "signals": [_webhook("http://127.0.0.1:9/h", secret=secret)]}
    )
    assert response.status_code == 422, response.text
    assert response.json()["details"][0]["field"] == "signals[0].secret"
    assert "base64" in response.json()["details"][0]["error"]


async def test_rotation_and_inspector_bins_refuse_a_secret_that_cannot_sign(api: httpx.AsyncClient) -> None:
    set_id = await make_set(api)
    doc = {"name": "wf", "set_id": set_id, "triggers": {"entry": True}}
    created = await api.post("/api/v1/workflows", json={**doc, "signals": [_webhook("http://127.0.0.1:9/h")]})
    assert created.status_code == 201, created.text
    workflow_id, signal_id = created.json()["id"], created.json()["signals"][0]["id"]
    path = f"/api/v1/workflows/{workflow_id}/signals/{signal_id}/rotate-secret"
    for secret in BAD_SECRETS:
        rotated = await api.post(path, json={"secret": secret})
        assert rotated.status_code == 422, rotated.text
        assert rotated.json()["details"][0]["field"] == "secret"
        made = await api.post("/api/v1/inspector/bins", json={"secret": secret})
        assert made.status_code == 422, made.text
        assert made.json()["details"][0]["field"] == "secret"
    good = signing.new_secret()
    assert (await api.post(path, json={"secret": good})).status_code == 200
    assert (await api.post("/api/v1/inspector/bins", json={"secret": good})).status_code == 201


async def test_secret_that_cannot_sign_is_a_recorded_retried_attempt_not_a_crash(ctx: AppContext) -> None:
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url, max_attempts=2)
        _store_secret(ctx, signal_id, BAD_SECRETS[0])
        [delivery_id] = enqueue(ctx, signal_id, rx.url, ["{}"])
        async with running_worker(ctx):
            row = await until(lambda: (d := delivery(ctx, delivery_id)).status == "retrying" and d)
            assert row.attempt_count == 1 and row.last_error_kind == "internal"
            assert row.lease_owner is None  # concluded, not left to a running-out lease
            make_due(ctx)
            row = await until(lambda: (d := delivery(ctx, delivery_id)).status == "failed" and d)
    assert rx.received == []
    tries = attempts_of(ctx, delivery_id)
    assert [a.error_kind for a in tries] == ["internal", "internal"]
    assert "signing secret" in tries[0].hint and "retried" in tries[0].hint
    assert "qhook stopped: gave up after 2 attempts" in tries[1].hint and row.attempt_count == 2
    for attempt in tries:
        assert "abcdefgh" not in (attempt.hint or "") + (attempt.error or "")


async def test_send_test_with_a_secret_that_cannot_sign_answers_with_the_attempt(
    ctx: AppContext, api: httpx.AsyncClient
) -> None:
    set_id = await make_set(api)
    async with receiver() as rx:
        created = await api.post(
            "/api/v1/workflows",
            json={"name": "wf", "set_id": set_id, "triggers": {"entry": True}, "signals": [_webhook(rx.url)]},
        )
        assert created.status_code == 201, created.text
        workflow_id, signal_id = created.json()["id"], created.json()["signals"][0]["id"]
        _store_secret(ctx, signal_id, BAD_SECRETS[0])
        response = await api.post(f"/api/v1/workflows/{workflow_id}/signals/{signal_id}/test")
    assert response.status_code == 200, response.text
    attempt = response.json()["attempt"]
    assert attempt["error_kind"] == "internal" and "signing secret" in attempt["hint"]
    assert rx.received == []
    assert delivery(ctx, response.json()["delivery_id"]).status == "failed"


@pytest.mark.parametrize("max_age", ["P60D", "P1M", "PT10S", "P1Y", "-P1D", "2 days"])
async def test_workflow_save_refuses_a_max_age_the_worker_cannot_use(
    api: httpx.AsyncClient, max_age: str
) -> None:
    set_id = await make_set(api)
    doc = {"name": "wf", "set_id": set_id, "triggers": {"entry": True}}
    ok = _webhook("http://127.0.0.1:9/h")
    response = await api.post(
        "/api/v1/workflows", json={**doc, "signals": [ok, _webhook("http://127.0.0.1:9/h", max_age=max_age)]}
    )
    assert response.status_code == 422, response.text
    [detail] = response.json()["details"]
    assert detail["field"] == "signals[1].max_age" and "1 minute to 30 days" in detail["error"]
    created = await api.post("/api/v1/workflows", json={**doc, "signals": [ok]})
    patched = await api.patch(
        f"/api/v1/workflows/{created.json()['id']}", json={"signals": [{**ok, "max_age": max_age}]}
    )
    assert patched.status_code == 422 and patched.json()["details"][0]["field"] == "signals[0].max_age"


async def test_max_attempts_holds_whatever_the_max_age(ctx: AppContext, api: httpx.AsyncClient) -> None:
    """Two signals with max_attempts 2: one saved with max_age PT1H, one whose stored max_age ('P60D')
    predates the check at save time. Both fail after exactly 2 attempts, not the default 12."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    set_id = await make_set(api)
    async with receiver(handler) as rx:
        signal = _webhook(rx.url, max_attempts=2, max_age="PT1H")
        created = await api.post(
            "/api/v1/workflows",
            json={"name": "wf", "set_id": set_id, "triggers": {"entry": True}, "signals": [signal, signal]},
        )
        assert created.status_code == 201, created.text
        legacy_id = created.json()["signals"][1]["id"]
        with ctx.db.transaction() as tx:
            config = tx.execute(select(signals.c.config).where(signals.c.id == legacy_id)).scalar_one()
            tx.execute(
                update(signals).where(signals.c.id == legacy_id).values(config={**config, "max_age": "P60D"})
            )
        await add_result(api, set_id, batchnumber_="B-1")
        with ctx.db.reading() as tx:
            ids = list(tx.execute(select(deliveries.c.id).order_by(deliveries.c.id)).scalars())
        assert len(ids) == 2
        async with running_worker(ctx):
            await until(lambda: all(delivery(ctx, i).status == "retrying" for i in ids))
            make_due(ctx)
            rows = await until(lambda: _all_failed(ctx, ids))
    assert [r.attempt_count for r in rows] == [2, 2]
    assert all("gave up after 2 attempts" in r.hint for r in rows)
    assert len(rx.received) == 4


def _age(ctx: AppContext, ids: list[int], seconds: float, **values: Any) -> None:
    """Events from ``seconds`` ago (and other columns), due now."""
    with ctx.db.transaction() as tx:
        tx.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids))
            .values(created_at=utcnow() - timedelta(seconds=seconds), next_attempt_at=utcnow(), **values)
        )


async def test_a_retry_whose_turn_comes_after_max_age_is_not_sent(ctx: AppContext) -> None:
    """max_age PT1M, events 2 minutes old: a scheduled retry is failed unsent, with an attempt that
    says why; a first attempt, a redelivery asked for in the Hub and a retry within max_age go."""
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url, max_age="PT1M")
        late, first, manual, fresh, last = enqueue(
            ctx, signal_id, rx.url, ['{"n":0}', '{"n":1}', '{"n":2}', '{"n":3}', '{"n":4}']
        )
        _age(ctx, [late, manual], 120, status="retrying", attempt_count=1)
        _age(ctx, [manual], 120, next_trigger="manual")
        _age(ctx, [first], 120)
        _age(ctx, [fresh], 30, status="retrying", attempt_count=1)
        # The last try, due at the deadline itself (as ``retry.decide`` schedules it), still goes.
        _age(ctx, [last], 60.5, status="retrying", attempt_count=1)
        everyone = (late, first, manual, fresh, last)
        async with running_worker(ctx):
            await until(lambda: all(delivery(ctx, i).status in ("succeeded", "failed") for i in everyone))
    assert sorted(rx.bodies()) == [b'{"n":1}', b'{"n":2}', b'{"n":3}', b'{"n":4}']
    row = delivery(ctx, late)
    assert (row.status, row.attempt_count, row.last_status_code, row.last_error_kind) == (
        "failed",
        2,
        None,
        "expired",
    )
    assert row.hint.startswith("Not sent: this retry was due at ")
    assert "the signal's max_age (PT1M after the event) had passed" in row.hint
    assert "qhook stopped: it is older than the signal's max_age" in row.hint
    (attempt,) = attempts_of(ctx, late)
    assert (attempt.number, attempt.error_kind, attempt.status_code, attempt.hint) == (
        2,
        "expired",
        None,
        row.hint,
    )
    assert [delivery(ctx, i).status for i in (first, manual, fresh, last)] == ["succeeded"] * 4


async def test_a_retry_past_max_age_takes_none_of_the_endpoints_rate(ctx: AppContext) -> None:
    """With a rate of 1 a minute, five retries past max_age ahead of a new event: the new event
    takes the one send of the minute, at once; the retries are failed without using it up."""
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url, max_age="PT1M", rate_limit="1/minute")
        late = enqueue(ctx, signal_id, rx.url, ['{"late":true}'] * 5)
        _age(ctx, late, 120, status="retrying", attempt_count=1)
        (new,) = enqueue(ctx, signal_id, rx.url, ['{"new":true}'])
        async with running_worker(ctx):
            await until(lambda: delivery(ctx, new).status == "succeeded")
            await until(lambda: all(delivery(ctx, i).status == "failed" for i in late))
    assert rx.bodies() == [b'{"new":true}']
    assert {delivery(ctx, i).last_error_kind for i in late} == {"expired"}
