"""Circuit breaker decisions (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from qhook.domain import circuit

POLICY = circuit.CircuitPolicy()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def window_of(outcomes: list[bool], start: datetime = T0) -> circuit.Window:
    window = circuit.Window()
    for i, ok in enumerate(outcomes):
        window = circuit.record(window, start + timedelta(seconds=i), ok, POLICY)
    return window


def test_opens_after_ten_attempts_with_seventy_percent_failures() -> None:
    assert not circuit.should_open(window_of([False] * 9), T0 + timedelta(seconds=9), POLICY)
    assert circuit.should_open(window_of([False] * 10), T0 + timedelta(seconds=10), POLICY)
    assert circuit.should_open(window_of([True] * 3 + [False] * 7), T0 + timedelta(seconds=10), POLICY)
    assert not circuit.should_open(window_of([True] * 4 + [False] * 6), T0 + timedelta(seconds=10), POLICY)


def test_old_outcomes_leave_the_window() -> None:
    window = window_of([False] * 10)
    assert not circuit.should_open(window, T0 + timedelta(minutes=6), POLICY)
    later = circuit.record(window, T0 + timedelta(minutes=6), False, POLICY)
    assert later.attempts == 1


def test_probe_after_cool_off_and_lost_probe_retried() -> None:
    assert not circuit.probe_due("open", T0, None, T0 + timedelta(seconds=59), POLICY)
    assert circuit.probe_due("open", T0, None, T0 + timedelta(seconds=60), POLICY)
    assert not circuit.probe_due("half_open", T0, T0, T0 + timedelta(seconds=60), POLICY)
    assert circuit.probe_due("half_open", T0, T0, T0 + POLICY.probe_timeout, POLICY)
    assert not circuit.probe_due("closed", None, None, T0, POLICY)
    assert circuit.after_probe(True) == "closed" and circuit.after_probe(False) == "open"
