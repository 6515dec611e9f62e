"""One attempt of one delivery: build the request, send it, decide what next, describe it.

I/O is the send itself (and an OAuth2 token fetch inside ``prepare``); the decisions are the pure
``domain.retry`` and ``domain.hints``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.delivery import auth as auth_mod
from qhook.delivery import prepare
from qhook.delivery.sender import OutgoingRequest, Sender, SendOutcome
from qhook.domain import hints, retry
from qhook.errors import QhookError
from qhook.store import queue

CIRCUIT_FAILURE_KINDS = frozenset({"dns", "connect", "tls", "timeout"})


@dataclass(frozen=True, slots=True)
class AttemptResult:
    attempt: queue.AttemptRow
    decision: retry.RetryDecision
    status_code: int | None
    error_kind: str | None
    hint: str | None
    duration_ms: int | None
    finished_at: datetime


def counts_for_circuit(result: AttemptResult) -> bool:
    """Successes and endpoint-wide failures (network, 5xx) count; a 4xx is about one message."""
    if result.decision.outcome == "succeeded":
        return True
    if result.error_kind in CIRCUIT_FAILURE_KINDS:
        return True
    code = result.status_code
    return code is not None and code >= 500 and result.error_kind in (None, "http_status")


async def perform(
    ctx: AppContext, sender: Sender, delivery: queue.QueuedDelivery, signal: queue.SendSignal | None
) -> AttemptResult:
    started = utcnow()
    request: OutgoingRequest | None = None
    auth: auth_mod.ResolvedAuth | None = None
    permanent = False
    if signal is None:
        outcome = _refused("gone", "the signal of this delivery was deleted")
        permanent = True
    else:
        try:
            request, auth = await _build(ctx, sender, delivery, signal, started)
        except auth_mod.AuthFailed as exc:
            outcome = _refused(exc.kind, exc.message)
            permanent = exc.permanent
        except QhookError as exc:  # a secret that cannot be decrypted, a bad stored config
            outcome = _refused("config", exc.message)
            permanent = True
        else:
            outcome = await sender.send(request)
            if outcome.status_code == 401 and auth is not None and auth.token is not None:
                # The token may have been revoked early: forget it, fetch a fresh one, try once more.
                await auth_mod.invalidate(ctx, auth.profile_id, auth.token)
                try:
                    request, auth = await _build(ctx, sender, delivery, signal, utcnow())
                except auth_mod.AuthFailed as exc:
                    outcome = _refused(exc.kind, exc.message)
                    permanent = exc.permanent
                else:
                    outcome = await sender.send(request)
    finished = utcnow()
    config = signal.config if signal else {}
    try:
        policy = retry.policy_of(config)
    except ValueError:
        policy = retry.RetryPolicy()
    decision = retry.decide(
        status_code=outcome.status_code,
        error_kind=outcome.error_kind,
        attempt_number=delivery.attempt_count + 1,
        created_at=delivery.created_at,
        now=finished,
        jitter=random.random(),
        policy=policy,
        retry_after_s=outcome.retry_after_s,
        permanent=permanent,
    )
    hint = None
    if decision.outcome != "succeeded":
        hint = _hint(ctx, delivery, outcome, decision, request, auth)
    headers = prepare.redact(request.headers, request.secret_header_names) if request else {}
    attempt = queue.AttemptRow(
        delivery_id=delivery.id,
        number=delivery.attempt_count + 1,
        trigger=delivery.next_trigger,
        started_at=started,
        duration_ms=outcome.duration_ms,
        request_headers=headers,
        status_code=outcome.status_code,
        response_headers=outcome.response_headers or None,
        response_body=outcome.response_body or None,
        error_kind=outcome.error_kind,
        error=outcome.error,
        hint=hint,
    )
    return AttemptResult(
        attempt, decision, outcome.status_code, outcome.error_kind, hint, outcome.duration_ms, finished
    )


def _hint(
    ctx: AppContext,
    delivery: queue.QueuedDelivery,
    outcome: SendOutcome,
    decision: retry.RetryDecision,
    request: OutgoingRequest | None,
    auth: auth_mod.ResolvedAuth | None,
) -> str | None:
    if outcome.error_kind in ("gone", "config"):
        return f"Not sent: {outcome.error}."
    found = hints.hint_for(
        url=delivery.url,
        status_code=outcome.status_code,
        error_kind=outcome.error_kind,
        error=outcome.error,
        auth_profile=auth.profile_name if auth else None,
        paused_until=decision.pause_endpoint_until,
        location=outcome.location,
        timeout_s=request.timeout_s if request else None,
        body_limit=ctx.settings.response_body_limit,
    )
    if decision.reason.startswith("gave up") or decision.reason == "older than max_age":
        return f"{found} Gave up: {decision.reason}." if found else decision.reason
    return found


def _refused(kind: str, message: str) -> SendOutcome:
    return SendOutcome(
        status_code=None,
        response_headers={},
        response_body="",
        duration_ms=0,
        error_kind=kind,
        error=message,
        retry_after_s=None,
    )


async def _build(
    ctx: AppContext, sender: Sender, delivery: queue.QueuedDelivery, signal: queue.SendSignal, now: datetime
) -> tuple[OutgoingRequest, auth_mod.ResolvedAuth | None]:
    profile_id = signal.config.get("auth_profile_id")
    auth = await auth_mod.auth_for(ctx, int(profile_id) if profile_id else None, delivery.url, sender=sender)
    return prepare.build_request(ctx, delivery, signal, auth, now), auth
