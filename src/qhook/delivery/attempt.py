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
from qhook.delivery.sender import OutgoingRequest, Sender, SendOutcome
from qhook.domain import hints, retry
from qhook.errors import DeliveryError, QhookError
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
    permanent = False
    if signal is None:
        outcome = _refused("gone", "the signal of this delivery was deleted")
        permanent = True
    else:
        try:
            request = await _build(ctx, delivery, signal, started)
        except DeliveryError as exc:
            outcome = _refused(exc.kind, exc.message)
            permanent = exc.kind != "auth" or exc.message.startswith(hints.ALLOWED_DOMAINS_PREFIX)
        except QhookError as exc:  # a secret that cannot be decrypted, a bad stored config
            outcome = _refused("config", exc.message)
            permanent = True
        else:
            outcome = await sender.send(request)
            if outcome.status_code == 401 and await _refresh_auth(ctx, signal):
                # The token may have been revoked early: fetch a fresh one and try once more.
                try:
                    request = await _build(ctx, delivery, signal, utcnow())
                except DeliveryError as exc:
                    outcome = _refused(exc.kind, exc.message)
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
        hint = _hint(ctx, delivery, outcome, decision, request, config)
    headers = _redact(request.headers, request.secret_header_names) if request else {}
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
    config: dict[str, object],
) -> str | None:
    if outcome.error_kind in ("gone", "config"):
        return f"Not sent: {outcome.error}."
    found = hints.hint_for(
        url=delivery.url,
        status_code=outcome.status_code,
        error_kind=outcome.error_kind,
        error=outcome.error,
        auth_profile=str(config.get("auth_profile_name") or "") or None,
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


# --- until delivery/prepare.py and delivery/auth.py land: the same contract, no auth profiles ---


async def _build(
    ctx: AppContext, delivery: queue.QueuedDelivery, signal: queue.SendSignal, now: datetime
) -> OutgoingRequest:
    from qhook import __version__
    from qhook.domain import signing

    body = delivery.body.encode()
    secret = ctx.box.decrypt(signal.secret_enc) if signal.secret_enc else signing.new_secret()
    previous = None
    if signal.previous_secret_enc and signal.previous_secret_until and signal.previous_secret_until > now:
        previous = ctx.box.decrypt(signal.previous_secret_enc)
    headers = {str(k): str(v) for k, v in dict(signal.config.get("headers") or {}).items()}
    headers.update(
        {"Content-Type": "application/json", "User-Agent": f"qhook/{__version__}"}
        | signing.signing_headers(secret, delivery.webhook_id, int(now.timestamp()), body, previous)
    )
    timeout = min(float(signal.config.get("timeout_s") or 15), 60.0)
    return OutgoingRequest(delivery.url, headers, body, timeout, frozenset({"webhook-signature"}))


async def _refresh_auth(ctx: AppContext, signal: queue.SendSignal) -> bool:
    return False


def _redact(headers: dict[str, str], secret_names: frozenset[str]) -> dict[str, str]:
    lowered = {n.lower() for n in secret_names}
    return {k: ("[redacted]" if k.lower() in lowered else v) for k, v in headers.items()}
