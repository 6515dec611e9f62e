"""``qhook serve``'s own worker: one that stops by an error is logged, restarted, and /readyz says so."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from qhook.api.app import create_app
from qhook.context import AppContext
from qhook.delivery import worker as worker_mod
from tests.support.delivery import delivery, enqueue, make_signal, receiver, until


async def test_a_worker_that_dies_is_started_again_and_readyz_says_so(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """It died silently (a CA bundle that could not be read, for one): /readyz said ready while
    nothing was delivered, and the traceback came only at shutdown (an operator's review)."""
    real = worker_mod.run_until_stopped
    calls = 0

    async def dies_once(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom at start")
        await real(*args, **kwargs)

    monkeypatch.setattr(worker_mod, "run_until_stopped", dies_once)
    app = create_app(ctx, lifespan_hooks=[worker_mod.start_in_app])
    transport = httpx.ASGITransport(app=app)
    caplog.set_level(logging.ERROR, logger="qhook.delivery.worker")
    async with (
        receiver() as rx,
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://qhook") as client,
    ):
        ready = await client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert (
            ready.json()["error"]
            == "the delivery worker stopped (RuntimeError: boom at start); it is started again"
        )
        assert any(
            r.getMessage().startswith("delivery worker stopped: RuntimeError: boom") for r in caplog.records
        )
        [sent] = enqueue(ctx, make_signal(ctx, rx.url), rx.url, ['{"n": 1}'])
        await until(lambda: delivery(ctx, sent).status == "succeeded", timeout=15)
    assert calls == 2
