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
from tests.conftest import TEST_SECRET_KEY
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


def test_an_older_secret_made_with_a_dropped_key_is_found_at_start_and_rekey_mends_it(
    ctx: AppContext, tmp_path: Path
) -> None:
    """Only the newest signal and profile were tried: after a rotation (new,old) and dropping the
    old key, the start passed and every delivery of the older signals failed. `qhook rekey`
    encrypts every stored secret with the newest key, so the old one can go."""
    from qhook.context import require_secret_key
    from qhook.errors import QhookError
    from qhook.services import secrets

    old_signal = make_signal(ctx, "https://erp.example.com/old")  # made with the test key
    rotated = replace(ctx, box=SecretBox(f"{OTHER_KEY},{TEST_SECRET_KEY}"))
    newest = make_signal(rotated, "https://erp.example.com/new")  # made with the new key
    only_new = replace(ctx, box=SecretBox(OTHER_KEY))
    try:
        require_secret_key(only_new)
        raise AssertionError("the older secret went unnoticed")
    except QhookError as exc:
        assert f"(signal {old_signal})" in exc.message and "qhook rekey" in exc.message
    assert newest > old_signal

    env = {
        **os.environ,
        "QHOOK_DATA_DIR": str(tmp_path / "var"),
        "QHOOK_DATABASE_URL": ctx.settings.resolved_database_url,
        "QHOOK_SECRET_KEY": f"{OTHER_KEY},{TEST_SECRET_KEY}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "qhook", "rekey"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "secret(s) now encrypted with the newest key" in done.stdout
    require_secret_key(only_new)  # every secret opens with the new key alone now
    assert secrets.rekey(rotated, actor="tests") >= 2  # and again: still every one


def test_rekey_changes_nothing_while_a_secret_opens_with_no_key_given(ctx: AppContext) -> None:
    from qhook.errors import QhookError
    from qhook.services import secrets
    from qhook.store import secrets as secret_store

    make_signal(ctx, "https://erp.example.com/hook")
    with ctx.db.reading() as tx:
        before = list(secret_store.stored(tx))
    try:
        secrets.rekey(replace(ctx, box=SecretBox(OTHER_KEY)), actor="tests")
        raise AssertionError("rekey went on")
    except QhookError as exc:
        assert "does not open the secrets" in exc.message
    with ctx.db.reading() as tx:
        assert list(secret_store.stored(tx)) == before


def test_without_qhook_secret_key_the_refusal_names_the_key_file(ctx: AppContext, tmp_path: Path) -> None:
    """It named QHOOK_SECRET_KEY although none was set, and not the key file qhook had used."""
    make_signal(ctx, "https://erp.example.com/hook")
    env = {
        **os.environ,
        "QHOOK_DATA_DIR": str(tmp_path / "var"),
        "QHOOK_DATABASE_URL": ctx.settings.resolved_database_url,
        "QHOOK_SECRET_KEY": "",
    }
    done = subprocess.run(
        [sys.executable, "-m", "qhook", "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    said = " ".join(done.stderr.split())
    key_file = (tmp_path / "var" / "secret.key").resolve()
    assert f"The key in {key_file} (QHOOK_SECRET_KEY is not set" in said, said
