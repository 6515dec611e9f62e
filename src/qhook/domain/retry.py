"""Retry policy: what to do after an attempt. Pure arithmetic; ``now`` and the jitter are passed in.

- Retryable: connection errors (dns, connect, tls), timeouts, the auth kind (the token endpoint was
  unreachable), 408 425 429 500 502 503 504 and other 5xx except 501 and 505 (those say "never").
- Not retryable: 3xx (redirects are not followed), other 4xx, ``ssrf_blocked``, ``redirect``,
  ``too_large``; 410 Gone also pauses the signal.
- ``Retry-After`` on 429/503 is honoured (capped at 1 h) and pauses the whole endpoint until then.
- After the first try: 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h, 12 h, 24 h, each ±20 %.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import isodate

DEFAULT_SCHEDULE_S: tuple[int, ...] = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 43200, 86400)
DEFAULT_MAX_ATTEMPTS = 12
DEFAULT_MAX_AGE = timedelta(days=2)
MAX_ATTEMPTS_LIMIT = 50
MAX_AGE_LIMIT = timedelta(days=30)
JITTER = 0.2
RETRY_AFTER_CAP_S = 3600.0

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# 501 Not Implemented and 505 HTTP Version Not Supported will not change by waiting.
PERMANENT_SERVER_STATUSES = frozenset({501, 505})
RETRY_AFTER_STATUSES = frozenset({429, 503})
# "internal": qhook itself failed preparing or sending (a bug, bad stored data); a fix or a changed
# setting may cure it, so it is retried under the policy rather than given up at once.
RETRYABLE_KINDS = frozenset({"dns", "connect", "tls", "timeout", "auth", "internal"})
PERMANENT_KINDS = frozenset({"ssrf_blocked", "redirect", "too_large"})
# A scheduled retry whose turn came only after max_age: not sent at all (``too_late_to_send``).
EXPIRED = "expired"
LATE_GRACE_MAX = timedelta(minutes=1)

Outcome = Literal["succeeded", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Per signal: how often and how long to keep trying."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_age: timedelta = DEFAULT_MAX_AGE
    schedule_s: tuple[int, ...] = field(default=DEFAULT_SCHEDULE_S)


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What the worker does next with the delivery (and its endpoint and signal)."""

    outcome: Outcome
    next_attempt_at: datetime | None = None  # set when outcome == "retry"
    pause_endpoint_until: datetime | None = None  # Retry-After: hold the whole origin until then
    pause_signal: bool = False  # 410 Gone: the receiver says it will never take these again
    reason: str = ""

    @property
    def final(self) -> bool:
        return self.outcome != "retry"


def is_success(status_code: int | None, error_kind: str | None) -> bool:
    return error_kind is None and status_code is not None and 200 <= status_code < 300


def is_retryable(status_code: int | None, error_kind: str | None) -> bool:
    """Whether waiting and trying again may help."""
    if error_kind in PERMANENT_KINDS:
        return False
    if error_kind in RETRYABLE_KINDS:
        return True
    if status_code is None:
        return error_kind is not None  # an unknown network failure: assume transient
    if status_code in RETRYABLE_STATUSES:
        return True
    return 500 <= status_code < 600 and status_code not in PERMANENT_SERVER_STATUSES


def past_max_age(created_at: datetime, now: datetime, policy: RetryPolicy) -> bool:
    """Whether retries of an event from ``created_at`` are over at ``now`` (after a failed attempt)."""
    return now >= created_at + policy.max_age


def too_late_to_send(created_at: datetime, now: datetime, policy: RetryPolicy) -> bool:
    """Whether a scheduled retry whose turn comes at ``now`` is no longer sent (kind ``expired``).

    One that waited behind an endpoint's pause (Retry-After, its rate limit, an open circuit) or
    a busy or stopped worker until well past ``max_age`` went out anyway, minutes or days late.
    The last try is due at the deadline itself (``decide``), so a turn that comes within
    ``late_grace`` after it still goes: a tenth of ``max_age``, at most a minute.
    """
    return now >= created_at + policy.max_age + late_grace(policy)


def late_grace(policy: RetryPolicy) -> timedelta:
    return min(policy.max_age / 10, LATE_GRACE_MAX)


def backoff_s(attempt_number: int, jitter: float, schedule_s: tuple[int, ...] = DEFAULT_SCHEDULE_S) -> float:
    """Delay after attempt ``attempt_number`` (1 = the first try); ``jitter`` in [0, 1) spreads it ±20 %."""
    base = schedule_s[min(max(attempt_number, 1), len(schedule_s)) - 1]
    return base * (1 + JITTER * (2 * min(max(jitter, 0.0), 1.0) - 1))


def decide(
    *,
    status_code: int | None,
    error_kind: str | None,
    attempt_number: int,
    created_at: datetime,
    now: datetime,
    jitter: float,
    policy: RetryPolicy = DEFAULT_POLICY,
    retry_after_s: float | None = None,
    permanent: bool = False,
    probe: bool = False,
    probe_failures: int = 0,
) -> RetryDecision:
    """Decide after attempt ``attempt_number`` (1-based) of a delivery created at ``created_at``.

    ``permanent`` forces failure for refusals decided before sending (e.g. allowed domains).
    ``probe``: the attempt tested an open circuit. It does not use up the delivery's attempts: the
    oldest held delivery went out with every probe, and after ``max_attempts`` failed probes it was
    failed for good while the endpoint was down, about one every 11 minutes of an outage. Nor do
    the earlier ``probe_failures`` among ``attempt_number`` count later. The backoff counts every
    attempt, so a delivery that keeps failing its probes waits longer between them.
    """
    if is_success(status_code, error_kind):
        return RetryDecision("succeeded", reason="delivered")
    if error_kind == EXPIRED:
        return RetryDecision("failed", reason="older than max_age")
    pause_until = None
    if retry_after_s is not None and status_code in RETRY_AFTER_STATUSES:
        pause_until = now + timedelta(seconds=min(max(retry_after_s, 0.0), RETRY_AFTER_CAP_S))
    if status_code == 410:
        return RetryDecision("failed", pause_signal=True, reason="the receiver answered 410 Gone")
    if permanent or not is_retryable(status_code, error_kind):
        return RetryDecision("failed", pause_endpoint_until=pause_until, reason="not retryable")
    if attempt_number - probe_failures >= policy.max_attempts and not probe:
        return RetryDecision(
            "failed", pause_endpoint_until=pause_until, reason=f"gave up after {attempt_number} attempts"
        )
    deadline = created_at + policy.max_age
    if past_max_age(created_at, now, policy):
        return RetryDecision("failed", pause_endpoint_until=pause_until, reason="older than max_age")
    if pause_until is not None and pause_until >= deadline:
        # The receiver's wait ends past max_age: the "last try at the deadline" below waited behind
        # the endpoint's pause and went out long after max_age (10 minutes after a 1-minute one).
        return RetryDecision(
            "failed",
            pause_endpoint_until=pause_until,
            reason="older than max_age by the end of the receiver's Retry-After",
        )
    next_at = now + timedelta(seconds=backoff_s(attempt_number, jitter, policy.schedule_s))
    if pause_until is not None and pause_until > next_at:
        next_at = pause_until
    # One last try at the deadline rather than giving up early.
    next_at = min(next_at, deadline)
    return RetryDecision(
        "retry", next_attempt_at=next_at, pause_endpoint_until=pause_until, reason="retrying"
    )


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP date), capped at 1 h."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return min(float(text), RETRY_AFTER_CAP_S)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" dates: RFC 9110 dates are GMT
        when = when.replace(tzinfo=now.tzinfo)
    return min(max((when - now).total_seconds(), 0.0), RETRY_AFTER_CAP_S)


MIN_MAX_AGE = timedelta(minutes=1)
MAX_AGE_EXPECTED = (
    "an ISO 8601 duration in days, hours or minutes (no months or years) from 1 minute to 30 days,"
    " e.g. 'P2D', 'PT6H' or 'PT30M'"
)


def parse_max_age(text: object) -> timedelta:
    """A signal's ``max_age``: the one check at save time and the one parser at send time.

    ValueError (saying what is expected, see ``MAX_AGE_EXPECTED``) for anything else.
    """
    if not isinstance(text, str):
        raise ValueError(MAX_AGE_EXPECTED)
    try:
        duration = isodate.parse_duration(text)
    except (isodate.ISO8601Error, ValueError, TypeError) as exc:
        raise ValueError(MAX_AGE_EXPECTED) from exc
    # Months and years (an isodate.Duration) have no fixed length.
    if not isinstance(duration, timedelta) or not MIN_MAX_AGE <= duration <= MAX_AGE_LIMIT:
        raise ValueError(MAX_AGE_EXPECTED)
    return duration


def parse_max_attempts(value: object) -> int:
    """A signal's ``max_attempts``: a whole number from 1 to ``MAX_ATTEMPTS_LIMIT``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ATTEMPTS_LIMIT:
        raise ValueError(f"an integer from 1 to {MAX_ATTEMPTS_LIMIT}")
    return value


def policy_of(config: Mapping[str, Any]) -> RetryPolicy:
    """The retry policy of a webhook signal's config (defaults for absent keys); never raises.

    Saving checks both keys with the parsers above. A value stored before those checks existed
    falls back on its own, so a bad ``max_age`` never takes the signal's ``max_attempts`` with it.
    """
    raw_attempts = config.get("max_attempts")
    try:
        max_attempts = DEFAULT_MAX_ATTEMPTS if raw_attempts is None else parse_max_attempts(raw_attempts)
    except ValueError:
        max_attempts = _clamped_attempts(raw_attempts)
    raw_age = config.get("max_age")
    try:
        max_age = parse_max_age(raw_age) if raw_age else DEFAULT_MAX_AGE
    except ValueError:
        max_age = _clamped_age(raw_age)
    return RetryPolicy(max_attempts=max_attempts, max_age=max_age)


def _clamped_attempts(raw: object) -> int:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return int(min(max(raw, 1), MAX_ATTEMPTS_LIMIT))
    return DEFAULT_MAX_ATTEMPTS


def _clamped_age(raw: object) -> timedelta:
    """The nearest allowed age for a stored out-of-range one ('P60D' -> 30 days); the default otherwise."""
    try:
        duration = isodate.parse_duration(str(raw))
    except (isodate.ISO8601Error, ValueError, TypeError):
        return DEFAULT_MAX_AGE
    if not isinstance(duration, timedelta):  # months or years: longer than any allowed age
        return MAX_AGE_LIMIT if str(raw).strip()[:1] != "-" else MIN_MAX_AGE
    return min(max(duration, MIN_MAX_AGE), MAX_AGE_LIMIT)
