"""attempt.perform turns qhook's own failures into recorded attempts (fake sender, no socket)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.fernet import Fernet

from qhook.context import AppContext
from qhook.crypto import SecretBox
from qhook.delivery import attempt
from qhook.delivery.sender import OutgoingRequest, SendOutcome
from qhook.domain.signing import new_secret
from qhook.store.queue import QueuedDelivery, SendSignal

BOX = SecretBox(Fernet.generate_key().decode())
CTX: AppContext = SimpleNamespace(box=BOX, settings=SimpleNamespace(response_body_limit=65536))  # type: ignore[assignment]
NOW = datetime.now(UTC)


class RaisingSender:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    async def send(self, request: OutgoingRequest) -> SendOutcome:
        self.calls += 1
        raise self.error


def _delivery(attempt_count: int = 0) -> QueuedDelivery:
    url = "https://erp.example.com/hook"
    return QueuedDelivery(
        id=1,
        webhook_id="msg_1",
        event_id=None,
        workflow_id=1,
        signal_id=1,
        set_id=1,
        result_id=1,
        action="new",
        url=url,
        endpoint="https://erp.example.com:443",
        body="{}",
        status="pending",
        attempt_count=attempt_count,
        next_attempt_at=NOW,
        ordered=False,
        order_key=None,
        is_test=False,
        created_at=NOW,
        next_trigger="scheduled",
    )


def _signal(secret: str, **config: Any) -> SendSignal:
    return SendSignal(
        id=1,
        workflow_id=1,
        config={"url": "https://erp.example.com/hook", **config},
        secret_enc=BOX.encrypt(secret),
        previous_secret_enc=None,
        previous_secret_until=None,
        paused_reason=None,
        active=True,
        error_email=None,
    )


async def test_a_raising_sender_is_an_internal_attempt_under_the_retry_policy() -> None:
    sender = RaisingSender(RuntimeError("sender bug"))
    result = await attempt.perform(CTX, sender, _delivery(), _signal(new_secret()))  # type: ignore[arg-type]
    assert sender.calls == 1
    assert result.error_kind == "internal" and result.decision.outcome == "retry"
    assert result.attempt.error == "RuntimeError: sender bug"
    assert result.hint is not None and "RuntimeError: sender bug" in result.hint
    assert result.attempt.request_headers == {}  # nothing half-known is recorded as sent


async def test_a_secret_that_cannot_sign_never_reaches_the_sender_and_gives_up_at_max_attempts() -> None:
    sender = RaisingSender(AssertionError("must not send"))
    bad = "whsec_abcdefgh-ijklmnop"
    result = await attempt.perform(CTX, sender, _delivery(attempt_count=1), _signal(bad, max_attempts=2))  # type: ignore[arg-type]
    assert sender.calls == 0
    assert result.error_kind == "internal" and result.decision.outcome == "failed"
    assert result.hint is not None and "signing secret" in result.hint
    assert "qhook stopped: gave up after 2 attempts. Once the cause is fixed, Redeliver" in result.hint
    assert "abcdefgh" not in result.hint


@pytest.mark.parametrize("text", ["", "x" * 1000])
async def test_the_described_error_is_short(text: str) -> None:
    result = await attempt.perform(CTX, RaisingSender(ValueError(text)), _delivery(), _signal(new_secret()))  # type: ignore[arg-type]
    assert result.attempt.error is not None and len(result.attempt.error) <= attempt.INTERNAL_ERROR_CHARS
    assert result.attempt.error.startswith("ValueError")


async def test_nul_in_a_message_is_stored_as_a_replacement_character() -> None:
    # PostgreSQL's text refuses NUL: one such message failed the write of its whole batch.
    sender = RaisingSender(RuntimeError("bad\x00byte"))
    result = await attempt.perform(CTX, sender, _delivery(), _signal(new_secret()))  # type: ignore[arg-type]
    assert result.attempt.error == "RuntimeError: bad\ufffdbyte"
    assert result.hint is not None and "bad\ufffdbyte" in result.hint and "\x00" not in result.hint
    assert result.attempt.hint == result.hint


def test_only_a_scheduled_retry_is_too_late_after_max_age() -> None:
    """max_age bounds retries: a first attempt, a redelivery from the Hub and a probe still go."""
    signal = _signal(new_secret(), max_age="PT1M")
    later = NOW + timedelta(minutes=2)
    retry_row = _delivery(attempt_count=1)
    assert attempt.too_late(retry_row, signal, later)
    assert not attempt.too_late(retry_row, signal, NOW + timedelta(seconds=30))
    assert not attempt.too_late(_delivery(attempt_count=0), signal, later)
    assert not attempt.too_late(replace(retry_row, next_trigger="manual"), signal, later)
    assert not attempt.too_late(retry_row, signal, later, probe=True)
    assert not attempt.too_late(retry_row, None, later)


async def test_a_retry_past_max_age_never_reaches_the_sender() -> None:
    sender = RaisingSender(AssertionError("must not be called"))
    signal = _signal(new_secret(), max_age="PT1M")
    late = replace(_delivery(attempt_count=3), created_at=NOW - timedelta(minutes=5))
    result = await attempt.perform(CTX, sender, late, signal)  # type: ignore[arg-type]
    assert sender.calls == 0
    assert (result.decision.outcome, result.error_kind, result.attempt.number) == ("failed", "expired", 4)
    assert result.attempt.request_headers == {}
    assert result.hint is not None and "max_age (PT1M after the event) had passed" in result.hint
