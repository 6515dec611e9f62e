"""Gaps between what saves and what sends, on SQLite and PostgreSQL: bad signing secrets, max_age.

A value accepted when a workflow is saved must send; and whatever goes wrong inside qhook while one
delivery is prepared or sent becomes a recorded attempt, never a crash that leaves no trace.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import update

from qhook.context import AppContext
from qhook.domain import signing
from qhook.store.tables import signals
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
from tests.support.workflows import make_set

# Each saved fine before (URL-safe characters, a length base64 cannot have) and then broke signing.
BAD_SECRETS = ["whsec_abcdefgh-ijklmnop", "whsec_abcdefgh_ijklmnop", "whsec_" + "A" * 17]


def _store_secret(ctx: AppContext, signal_id: int, secret: str) -> None:
    """A secret as an older release (or a hand-edited database) may have stored it."""
    with ctx.db.transaction() as tx:
        tx.execute(
            update(signals).where(signals.c.id == signal_id).values(secret_enc=ctx.box.encrypt(secret))
        )


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
    assert "Gave up" in tries[1].hint and row.attempt_count == 2
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
