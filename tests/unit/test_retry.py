"""Retry decisions and Retry-After parsing: pure, property-tested."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qhook.domain import retry
from qhook.domain.retry import RetryPolicy, decide, parse_retry_after

NOW = datetime(2025, 10, 2, 13, 37, tzinfo=UTC)


def _decide(**kwargs: object) -> retry.RetryDecision:
    values: dict[str, object] = {
        "status_code": 500,
        "error_kind": "http_status",
        "attempt_number": 1,
        "created_at": NOW,
        "now": NOW,
        "jitter": 0.5,
    }
    values.update(kwargs)
    return decide(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    decision = _decide(status_code=status)
    assert decision.outcome == "retry"
    assert decision.next_attempt_at == NOW + timedelta(seconds=5)


@pytest.mark.parametrize("kind", ["dns", "connect", "tls", "timeout", "auth"])
def test_network_errors_retry(kind: str) -> None:
    assert _decide(status_code=None, error_kind=kind).outcome == "retry"


@pytest.mark.parametrize("status", [301, 302, 307, 400, 401, 403, 404, 405, 409, 413, 422, 501, 505])
def test_other_4xx_3xx_fail_at_once(status: int) -> None:
    decision = _decide(status_code=status)
    assert decision.outcome == "failed"
    assert decision.next_attempt_at is None
    assert not decision.pause_signal


@pytest.mark.parametrize("kind", ["ssrf_blocked", "redirect", "too_large"])
def test_permanent_kinds_fail(kind: str) -> None:
    assert _decide(status_code=None, error_kind=kind).outcome == "failed"


def test_410_fails_and_pauses_signal() -> None:
    decision = _decide(status_code=410)
    assert decision.outcome == "failed" and decision.pause_signal


def test_success() -> None:
    decision = _decide(status_code=204, error_kind=None)
    assert decision.outcome == "succeeded" and decision.final


def test_permanent_flag_fails_even_if_retryable() -> None:
    assert _decide(status_code=None, error_kind="auth", permanent=True).outcome == "failed"


def test_default_schedule_without_jitter() -> None:
    expected = [5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 43200, 86400]
    assert [retry.backoff_s(n, 0.5) for n in range(1, 12)] == expected
    assert retry.backoff_s(40, 0.5) == 86400


def test_twelve_attempts_then_failed() -> None:
    policy = RetryPolicy(max_age=timedelta(days=30))
    now, created = NOW, NOW
    for number in range(1, 12):
        decision = _decide(attempt_number=number, now=now, created_at=created, policy=policy)
        assert decision.outcome == "retry", number
        assert decision.next_attempt_at is not None
        now = decision.next_attempt_at
    assert _decide(attempt_number=12, now=now, created_at=created, policy=policy).outcome == "failed"
    # The whole schedule spans about two days; the default max_age (P2D) clamps the last try.
    assert timedelta(days=2) < now - created < timedelta(days=2, hours=4)
    last = _decide(attempt_number=11, now=NOW + timedelta(days=1, hours=12), created_at=NOW)
    assert last.next_attempt_at == NOW + timedelta(days=2)


def test_max_age_caps_next_attempt_and_then_fails() -> None:
    policy = RetryPolicy(max_attempts=50, max_age=timedelta(hours=1))
    decision = _decide(attempt_number=7, now=NOW + timedelta(minutes=50), policy=policy)
    assert decision.next_attempt_at == NOW + timedelta(hours=1)
    assert _decide(attempt_number=8, now=NOW + timedelta(hours=1), policy=policy).outcome == "failed"


def test_retry_after_pauses_endpoint_and_delays_retry() -> None:
    decision = _decide(status_code=429, retry_after_s=600)
    assert decision.outcome == "retry"
    assert decision.pause_endpoint_until == NOW + timedelta(seconds=600)
    assert decision.next_attempt_at == NOW + timedelta(seconds=600)
    # 503 too; but a Retry-After on a 500 is not a throttle signal.
    assert _decide(status_code=503, retry_after_s=60).pause_endpoint_until is not None
    assert _decide(status_code=500, retry_after_s=60).pause_endpoint_until is None


def test_a_retry_after_ending_past_max_age_fails_now() -> None:
    """The last try at the max_age deadline waited behind the endpoint's Retry-After pause and
    went out 10 minutes after a 1-minute max_age (a receiver developer's review)."""
    policy = RetryPolicy(max_attempts=3, max_age=timedelta(minutes=1))
    decision = _decide(status_code=429, retry_after_s=600, policy=policy)
    assert decision.outcome == "failed" and decision.next_attempt_at is None
    assert decision.reason == "older than max_age by the end of the receiver's Retry-After"
    assert decision.pause_endpoint_until == NOW + timedelta(seconds=600)  # the endpoint still waits
    within = _decide(status_code=429, retry_after_s=30, policy=policy)
    assert within.outcome == "retry" and within.next_attempt_at == NOW + timedelta(seconds=30)


def test_past_max_age_from_the_deadline_on() -> None:
    policy = RetryPolicy(max_age=timedelta(minutes=1))
    assert not retry.past_max_age(NOW, NOW + timedelta(seconds=59), policy)
    assert retry.past_max_age(NOW, NOW + timedelta(minutes=1), policy)
    assert retry.past_max_age(NOW, NOW + timedelta(days=3), RetryPolicy())


def test_the_last_try_at_the_deadline_still_goes_within_its_grace() -> None:
    """``decide`` puts the last try at the deadline itself: its turn comes a moment after it."""
    one_minute = RetryPolicy(max_age=timedelta(minutes=1))  # grace: a tenth, 6 s
    deadline = NOW + timedelta(minutes=1)
    assert not retry.too_late_to_send(NOW, deadline + timedelta(seconds=5), one_minute)
    assert retry.too_late_to_send(NOW, deadline + timedelta(seconds=6), one_minute)
    two_days = RetryPolicy()  # grace: at most a minute
    assert not retry.too_late_to_send(NOW, NOW + timedelta(days=2, seconds=59), two_days)
    assert retry.too_late_to_send(NOW, NOW + timedelta(days=2, minutes=1), two_days)


def test_a_retry_refused_for_its_age_is_failed_as_older_than_max_age() -> None:
    """The worker refuses a retry whose turn came after max_age (kind ``expired``, nothing sent):
    failed for good, with the reason the hint explains, however many attempts are left."""
    decision = _decide(status_code=None, error_kind=retry.EXPIRED, attempt_number=2, permanent=True)
    assert (decision.outcome, decision.reason, decision.pause_endpoint_until) == (
        "failed",
        "older than max_age",
        None,
    )


def test_retry_after_capped_at_an_hour() -> None:
    decision = _decide(status_code=429, retry_after_s=99999)
    assert decision.pause_endpoint_until == NOW + timedelta(hours=1)


@given(
    number=st.integers(min_value=1, max_value=11),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_jitter_stays_within_twenty_percent(number: int, jitter: float) -> None:
    base = retry.DEFAULT_SCHEDULE_S[number - 1]
    assert base * 0.8 <= retry.backoff_s(number, jitter) <= base * 1.2


@given(
    number=st.integers(min_value=1, max_value=60),
    age_s=st.integers(min_value=0, max_value=10 * 86400),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
    max_attempts=st.integers(min_value=1, max_value=50),
    status=st.sampled_from([None, 200, 301, 404, 410, 429, 500, 503]),
    retry_after=st.one_of(st.none(), st.floats(min_value=0, max_value=7200)),
)
def test_decisions_are_consistent(
    number: int, age_s: int, jitter: float, max_attempts: int, status: int | None, retry_after: float | None
) -> None:
    policy = RetryPolicy(max_attempts=max_attempts)
    now = NOW + timedelta(seconds=age_s)
    kind = "connect" if status is None else (None if status == 200 else "http_status")
    decision = _decide(
        status_code=status,
        error_kind=kind,
        attempt_number=number,
        now=now,
        jitter=jitter,
        policy=policy,
        retry_after_s=retry_after,
    )
    if decision.outcome == "retry":
        assert number < max_attempts
        assert decision.next_attempt_at is not None
        assert now < decision.next_attempt_at <= NOW + policy.max_age
        # Never a retry that the endpoint's pause holds past max_age.
        assert decision.pause_endpoint_until is None or decision.pause_endpoint_until < NOW + policy.max_age
    else:
        assert decision.next_attempt_at is None
    if decision.pause_endpoint_until is not None:
        assert decision.pause_endpoint_until <= now + timedelta(hours=1)
    assert decision.pause_signal == (status == 410)


def test_parse_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after(" 7200 ", NOW) == 3600
    assert parse_retry_after("Thu, 02 Oct 2025 13:47:00 GMT", NOW) == 600
    assert parse_retry_after("Thu, 02 Oct 2025 12:00:00 GMT", NOW) == 0
    assert parse_retry_after("Fri, 03 Oct 2025 13:47:00 GMT", NOW) == 3600
    for bad in (None, "", "soon", "-5", "1.5", "Thu, 99 Foo 2025"):
        assert parse_retry_after(bad, NOW) is None


@given(st.integers(min_value=0, max_value=10**9))
def test_parse_retry_after_never_exceeds_cap(seconds: int) -> None:
    parsed = parse_retry_after(str(seconds), NOW)
    assert parsed is not None and 0 <= parsed <= 3600


@given(st.text(max_size=40))
def test_parse_retry_after_never_raises(value: str) -> None:
    parsed = parse_retry_after(value, NOW)
    assert parsed is None or 0 <= parsed <= 3600


def test_policy_of_config() -> None:
    assert retry.policy_of({}) == RetryPolicy()
    policy = retry.policy_of({"max_attempts": 3, "max_age": "PT6H"})
    assert policy.max_attempts == 3 and policy.max_age == timedelta(hours=6)
    for bad in ("P1M", "2 days", "P60D", "PT10S", "P1Y", "-P1D", "", None, 5):
        with pytest.raises(ValueError, match="1 minute to 30 days"):
            retry.parse_max_age(bad if bad != "" else "P")
    for bad_attempts in (0, 51, True, "3", 2.5):
        with pytest.raises(ValueError, match="1 to 50"):
            retry.parse_max_attempts(bad_attempts)


def test_policy_of_a_bad_stored_key_keeps_the_other() -> None:
    """Stored before the checks at save time: each key falls back on its own, never raises."""
    cases = {
        "P60D": timedelta(days=30),
        "P1M": timedelta(days=30),
        "P1Y": timedelta(days=30),
        "PT10S": timedelta(minutes=1),
        "2 days": retry.DEFAULT_MAX_AGE,
    }
    for stored, expected in cases.items():
        policy = retry.policy_of({"max_attempts": 2, "max_age": stored})
        assert policy == RetryPolicy(max_attempts=2, max_age=expected), stored
    assert retry.policy_of({"max_attempts": 0, "max_age": "PT6H"}) == RetryPolicy(1, timedelta(hours=6))
    assert retry.policy_of({"max_attempts": "x"}).max_attempts == retry.DEFAULT_MAX_ATTEMPTS


def test_a_failed_probe_uses_up_no_attempt_but_max_age_and_refusals_still_end_it() -> None:
    policy = RetryPolicy(max_attempts=2, max_age=timedelta(hours=1))
    assert _decide(attempt_number=9, probe=True, policy=policy).outcome == "retry"
    # Earlier failed probes among the attempts do not count for a later ordinary one.
    assert _decide(attempt_number=9, probe_failures=8, policy=policy).outcome == "retry"
    assert _decide(attempt_number=10, probe_failures=8, policy=policy).outcome == "failed"
    late = NOW + timedelta(hours=1)
    assert _decide(attempt_number=3, probe=True, now=late, policy=policy).reason == "older than max_age"
    refused = _decide(attempt_number=1, probe=True, status_code=400, policy=policy)
    assert refused.outcome == "failed" and refused.reason == "not retryable"
    # The backoff counts every attempt: a delivery that keeps failing probes waits longer each time.
    first = _decide(attempt_number=1, probe=True, policy=RetryPolicy(max_age=timedelta(days=2)))
    fifth = _decide(attempt_number=5, probe=True, policy=RetryPolicy(max_age=timedelta(days=2)))
    assert first.next_attempt_at is not None and fifth.next_attempt_at is not None
    assert fifth.next_attempt_at > first.next_attempt_at
