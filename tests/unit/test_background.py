"""A background loop (scheduler, purge, search index) while the database is away: one line now and
then with the driver's reason, not a traceback every round; one line when it is back."""

from __future__ import annotations

import asyncio
import logging

import pytest

from qhook.background import repeat
from qhook.errors import StoreError


async def test_an_outage_is_one_line_and_its_end_another(caplog: pytest.LogCaptureFixture) -> None:
    rounds = 0
    stop = asyncio.Event()

    def work() -> None:
        nonlocal rounds
        rounds += 1
        if rounds <= 5:
            raise StoreError(reason="connection refused")
        stop.set()

    logger = logging.getLogger("qhook.test.background")
    with caplog.at_level(logging.INFO, logger="qhook.test.background"):
        await repeat(
            work, stop, interval_s=0.01, logger=logger, failure="scheduler tick failed", action="tick"
        )
    lines = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
    assert lines == [
        ("WARNING", "scheduler tick failed: Database unavailable: connection refused; trying again", None),
        ("INFO", "database back after 5 failed rounds", None),
    ]
