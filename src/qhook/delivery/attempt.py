"""One attempt of one delivery: build the request, send it, decide what next, describe it.

I/O is the send itself (and an OAuth2 token fetch inside ``prepare``); the decisions are the pure
``domain.retry`` and ``domain.hints``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace
from datetime import datetime

import isodate

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.crypto import SecretUnreadable
from qhook.delivery import auth as auth_mod
from qhook.delivery import prepare
from qhook.delivery.sender import OutgoingRequest, Sender, SendOutcome, storable
from qhook.domain import hints, retry
from qhook.errors import QhookError
from qhook.store import queue

CIRCUIT_FAILURE_KINDS = frozenset({"dns", "connect", "tls", "timeout"})
INTERNAL_ERROR_CHARS = 300
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    attempt: queue.AttemptRow
    decision: retry.RetryDecision
    status_code: int | None
    error_kind: str | None
    hint: str | None
    duration_ms: int | None
    finished_at: datetime
    # Calls made before ``attempt`` in the same turn: the one a receiver refused with 401 before
    # qhook fetched a fresh OAuth2 token and sent again. Every call the receiver saw is on record.
    earlier: tuple[queue.AttemptRow, ...] = ()


def counts_for_circuit(result: AttemptResult) -> bool:
    """Successes and endpoint-wide failures (network, 5xx) count; a 4xx is about one message, and
    an answer with Retry-After is a receiver alive and asking for time (the pause handles it)."""
    if result.decision.outcome == "succeeded":
        return True
    if result.decision.pause_endpoint_until is not None:
        return False
    if result.error_kind in CIRCUIT_FAILURE_KINDS:
        return True
    code = result.status_code
    return code is not None and code >= 500 and result.error_kind in (None, "http_status")


def too_late(
    delivery: queue.QueuedDelivery, signal: queue.SendSignal | None, now: datetime, *, probe: bool = False
) -> bool:
    """Is this a scheduled retry whose turn came after the signal's ``max_age`` (and its grace,
    ``retry.too_late_to_send``)? It is not sent.

    ``max_age`` bounds how long retries go on: a first attempt always goes, as do a redelivery or
    replay someone asked for and a probe of an open circuit (it tests the endpoint).
    """
    if signal is None or probe or delivery.attempt_count == 0 or delivery.next_trigger != "scheduled":
        return False
    return retry.too_late_to_send(delivery.created_at, now, retry.policy_of(signal.config))


async def perform(
    ctx: AppContext,
    sender: Sender,
    delivery: queue.QueuedDelivery,
    signal: queue.SendSignal | None,
    *,
    probe: bool = False,
    once: bool = False,
) -> AttemptResult:
    """Send one attempt; ``probe``: it tests the endpoint's open circuit (see ``retry.decide``);
    ``once``: no retry follows whatever the answer (a send test), so the hint promises none."""
    started = utcnow()
    if signal is None:
        sent = _Sent(_refused("gone", "the signal of this delivery was deleted"), permanent=True)
    elif not once and too_late(delivery, signal, started, probe=probe):
        sent = _Sent(_refused(retry.EXPIRED, _too_late_text(delivery, signal, started)), permanent=True)
    else:
        try:
            sent = await _try_send(ctx, sender, delivery, signal, started)
        except Exception as exc:
            # A bug or stored data the checks at save time missed: a recorded failed attempt under
            # the retry policy, never a crash that leaves no trace and lets the lease run out forever.
            logger.exception(
                "delivery attempt failed inside qhook",
                extra={"action": "delivery_internal_error", "delivery_id": delivery.id},
            )
            sent = _Sent(_refused("internal", _describe(exc)))
    outcome, request, auth, refused = sent.outcome, sent.request, sent.auth, sent.refused
    finished = utcnow()
    number = delivery.attempt_count + 1
    earlier: tuple[queue.AttemptRow, ...] = ()
    if refused is not None:
        earlier = (_refused_row(delivery, number, refused, auth),)
        number += 1
    config = signal.config if signal else {}
    policy = retry.policy_of(config)  # never raises: a bad stored key falls back on its own
    decision = retry.decide(
        status_code=outcome.status_code,
        error_kind=outcome.error_kind,
        attempt_number=number,
        created_at=delivery.created_at,
        now=finished,
        jitter=random.random(),
        policy=policy,
        retry_after_s=outcome.retry_after_s,
        permanent=sent.permanent,
        probe=probe,
        probe_failures=delivery.probe_failures,
    )
    hint = None
    if decision.outcome != "succeeded":
        hint = _hint(ctx, delivery, outcome, decision, request, sent.profile_name, once=once)
        # Hints and errors may quote what a token endpoint or an exception said.
        hint = storable(hint) if hint else hint
    headers = prepare.redact(request.headers, request.secret_header_names) if request else {}
    attempt = queue.AttemptRow(
        delivery_id=delivery.id,
        number=number,
        trigger="probe" if probe else delivery.next_trigger,
        started_at=refused.resent_at if refused is not None else started,
        duration_ms=outcome.duration_ms,
        request_headers=headers,
        status_code=outcome.status_code,
        response_headers=outcome.response_headers or None,
        response_body=outcome.response_body or None,
        error_kind=outcome.error_kind,
        error=storable(outcome.error) if outcome.error else outcome.error,
        hint=hint,
        url=delivery.url,  # as the row says it (a legacy user:pass@ URL is sent without the pair)
    )
    return AttemptResult(
        attempt,
        decision,
        outcome.status_code,
        outcome.error_kind,
        hint,
        outcome.duration_ms,
        finished,
        earlier,
    )


@dataclass(frozen=True, slots=True)
class _Refused:
    """The call a receiver answered 401 with a cached OAuth2 token, before qhook sent again."""

    outcome: SendOutcome
    request: OutgoingRequest
    started_at: datetime
    resent_at: datetime


def _refused_row(
    delivery: queue.QueuedDelivery, number: int, refused: _Refused, auth: auth_mod.ResolvedAuth | None
) -> queue.AttemptRow:
    outcome = refused.outcome
    profile = f"auth profile '{auth.profile_name}'" if auth is not None else "the auth profile"
    return queue.AttemptRow(
        delivery_id=delivery.id,
        number=number,
        trigger=delivery.next_trigger,
        started_at=refused.started_at,
        duration_ms=outcome.duration_ms,
        request_headers=prepare.redact(refused.request.headers, refused.request.secret_header_names),
        status_code=outcome.status_code,
        response_headers=outcome.response_headers or None,
        response_body=outcome.response_body or None,
        error_kind=outcome.error_kind,
        error=storable(outcome.error) if outcome.error else outcome.error,
        hint=(
            f"The receiver refused the cached access token of {profile} (401): qhook forgot it, "
            f"fetched a new one and sent again at once (attempt {number + 1})."
        ),
        url=delivery.url,
    )


def _hint(
    ctx: AppContext,
    delivery: queue.QueuedDelivery,
    outcome: SendOutcome,
    decision: retry.RetryDecision,
    request: OutgoingRequest | None,
    profile_name: str | None,
    *,
    once: bool = False,
) -> str | None:
    final = decision.final or once
    if outcome.error_kind == retry.EXPIRED:
        return f"Not sent: {outcome.error}. {_gave_up(decision.reason)}"
    if outcome.error_kind in ("gone", "config"):
        if outcome.error_kind == "config" and not final:
            return (
                f"Not sent: {outcome.error}. It is tried again under the signal's retry policy: set "
                "QHOOK_SECRET_KEY to the key the secrets were made with."
            )
        return f"Not sent: {outcome.error}."
    if outcome.error_kind == "internal":
        internal = (
            f"Not sent: qhook failed while preparing or sending this request ({outcome.error})."
            " Check the signal's settings (signing secret, headers, auth profile)."
        )
        if final:
            return f"{internal} {_gave_up(decision.reason)}"
        return f"{internal} It is retried under the signal's retry policy."
    found = hints.hint_for(
        url=delivery.url,
        status_code=outcome.status_code,
        error_kind=outcome.error_kind,
        error=outcome.error,
        auth_profile=profile_name,
        paused_until=decision.pause_endpoint_until,
        location=outcome.location,
        timeout_s=request.timeout_s if request else None,
        body_limit=ctx.settings.response_body_limit,
        final=final,
        next_attempt_at=decision.next_attempt_at,
    )
    if decision.reason.startswith(("gave up", "older than max_age")):
        return f"{found} {_gave_up(decision.reason)}" if found else _gave_up(decision.reason)
    return found


_WHY_STOPPED = {
    "older than max_age": "it is older than the signal's max_age",
    "older than max_age by the end of the receiver's Retry-After": (
        "the receiver's Retry-After asks to wait past the signal's max_age"
    ),
}


def _gave_up(reason: str) -> str:
    """The end of a hint on a delivery qhook will not try again by itself."""
    why = _WHY_STOPPED.get(reason, reason)
    return f"qhook stopped: {why}. Once the cause is fixed, Redeliver in the Hub sends it again."


async def _try_send(
    ctx: AppContext,
    sender: Sender,
    delivery: queue.QueuedDelivery,
    signal: queue.SendSignal,
    started: datetime,
) -> _Sent:
    """Build and send; refusals before sending are outcomes too."""
    try:
        request, auth = await _build(ctx, sender, delivery, signal, started)
    except auth_mod.AuthFailed as exc:
        return _Sent(
            _refused(exc.kind, exc.message), permanent=exc.permanent, failed_profile=exc.profile_name
        )
    except SecretUnreadable as exc:
        # The setting is wrong, not the delivery: it waits under its retry policy for the right key
        # (``qhook serve`` and ``qhook worker`` refuse to start with a key that opens no secret).
        return _Sent(_refused("config", exc.message), permanent=False)
    except QhookError as exc:  # a bad stored config
        return _Sent(_refused("config", exc.message), permanent=True)
    outcome = await sender.send(request)
    if outcome.status_code == 401 and auth is not None and auth.token is not None:
        # The token may have been revoked early: forget it, fetch a fresh one, try once more.
        await auth_mod.invalidate(ctx, auth.profile_id, auth.token)
        refused = _Refused(outcome, request, started, utcnow())
        try:
            request, auth = await _build(ctx, sender, delivery, signal, refused.resent_at)
        except auth_mod.AuthFailed as exc:
            # Nothing more was sent: the receiver's 401 is the answer on record, and why no new
            # token came is the error (the hint is about the token endpoint).
            failed = replace(
                outcome,
                error_kind=exc.kind,
                error=f"the receiver answered 401 to the cached token; a new one: {exc.message}",
            )
            return _Sent(failed, request, auth, permanent=exc.permanent)
        return _Sent(await sender.send(request), request, auth, refused=refused)
    return _Sent(outcome, request, auth)


@dataclass(frozen=True, slots=True)
class _Sent:
    """What ``_try_send`` did: the outcome, the request sent (None when none was) and its auth."""

    outcome: SendOutcome
    request: OutgoingRequest | None = None
    auth: auth_mod.ResolvedAuth | None = None
    permanent: bool = False
    refused: _Refused | None = None  # the call refused with 401 before the outcome's
    failed_profile: str | None = None  # the profile whose credentials could not be had

    @property
    def profile_name(self) -> str | None:
        return self.auth.profile_name if self.auth is not None else self.failed_profile


def _too_late_text(delivery: queue.QueuedDelivery, signal: queue.SendSignal, now: datetime) -> str:
    max_age = isodate.duration_isoformat(retry.policy_of(signal.config).max_age)
    due = delivery.next_attempt_at or now
    return (
        f"this retry was due at {due:%Y-%m-%d %H:%M:%S} UTC, and when its turn came at"
        f" {now:%Y-%m-%d %H:%M:%S} UTC the signal's max_age ({max_age} after the event) had passed"
        " (the endpoint was paused by a Retry-After, its rate limit or an open circuit, or the"
        " worker was busy or stopped)"
    )


def _describe(exc: Exception) -> str:
    """What went wrong, for the hint: the error's type and message (ours never carry secret values)."""
    text = str(exc).strip()
    described = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return (
        described if len(described) <= INTERNAL_ERROR_CHARS else described[: INTERNAL_ERROR_CHARS - 1] + "…"
    )


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
    auth = await auth_mod.auth_for(
        ctx,
        int(profile_id) if profile_id else None,
        delivery.url,
        set_id=delivery.set_id,
        sender=sender,
        changed_at=signal.auth_profile_updated_at,
    )
    return prepare.build_request(ctx, delivery, signal, auth, now), auth
