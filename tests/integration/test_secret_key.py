"""A QHOOK_SECRET_KEY that does not open the stored secrets (changed, or another installation's
database): qhook serve and qhook worker refuse to start and say so; a delivery that meets it
anyway waits under its retry policy. Before, /readyz said ready and every delivery failed for good."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from cryptography.fernet import Fernet

from qhook.context import AppContext
from qhook.crypto import SecretBox
from tests.support.delivery import (
    attempts_of,
    delivery,
    enqueue,
    make_signal,
    receiver,
    running_worker,
    until,
)

OTHER_KEY = Fernet.generate_key().decode()


def test_serve_and_worker_refuse_a_key_that_opens_no_secret(ctx: AppContext, tmp_path: Path) -> None:
    signal_id = make_signal(ctx, "https://erp.example.com/hook")
    env = {
        **os.environ,
        "QHOOK_DATA_DIR": str(tmp_path / "var"),
        "QHOOK_DATABASE_URL": ctx.settings.resolved_database_url,
        "QHOOK_SECRET_KEY": OTHER_KEY,
        "QHOOK_PORT": "1",  # never reached
    }
    for command in (["worker"], ["serve"]):
        done = subprocess.run(
            [sys.executable, "-m", "qhook", *command], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert f"QHOOK_SECRET_KEY does not open the secrets stored in this database (signal {signal_id})" in (
            done.stderr
        ), done.stderr
        assert "Traceback" not in done.stderr


async def test_a_delivery_meeting_a_wrong_key_waits_instead_of_failing(ctx: AppContext) -> None:
    async with receiver() as rx:
        signal_id = make_signal(ctx, rx.url)
        [queued] = enqueue(ctx, signal_id, rx.url, ['{"n": 1}'])
        wrong = replace(ctx, box=SecretBox(OTHER_KEY))
        async with running_worker(wrong):
            await until(lambda: delivery(ctx, queued).attempt_count == 1)
    row = delivery(ctx, queued)
    assert row.status == "retrying" and rx.received == []
    [attempt] = attempts_of(ctx, queued)
    assert attempt.error_kind == "config"
    assert (
        attempt.hint is not None
        and "set QHOOK_SECRET_KEY to the key the secrets were made with" in attempt.hint
    )
