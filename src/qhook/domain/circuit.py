"""Circuit breaker decisions per endpoint: pure, ``now`` passed in.

closed --(>= min_attempts and >= failure_ratio failures within the window)--> open
open --(cool-off elapsed: one probe goes)--> half_open
half_open --(probe succeeded)--> closed;  half_open --(probe failed)--> open (cool-off again)

While open or half_open the endpoint's deliveries wait (``held``) without burning attempts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

CircuitState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    min_attempts: int = 10
    failure_ratio: float = 0.7
    window: timedelta = timedelta(minutes=5)
    cool_off: timedelta = timedelta(seconds=60)
    # A probe whose worker died is given up after this long and another probe goes.
    probe_timeout: timedelta = timedelta(seconds=120)


@dataclass(frozen=True, slots=True)
class Window:
    """Recent attempt outcomes of one endpoint, oldest first: (when, succeeded)."""

    outcomes: tuple[tuple[datetime, bool], ...] = field(default=())

    @property
    def attempts(self) -> int:
        return len(self.outcomes)

    @property
    def failures(self) -> int:
        return sum(1 for _, ok in self.outcomes if not ok)


def record(window: Window, now: datetime, succeeded: bool, policy: CircuitPolicy) -> Window:
    """The window with one more outcome, older ones than ``policy.window`` dropped."""
    horizon = now - policy.window
    kept = tuple(item for item in window.outcomes if item[0] > horizon)
    # Bound memory on busy endpoints: the ratio over the newest outcomes is what matters.
    limit = max(policy.min_attempts * 20, 200)
    return Window((*kept[-(limit - 1) :], (now, succeeded)))


def should_open(window: Window, now: datetime, policy: CircuitPolicy) -> bool:
    """Sustained failure: enough attempts in the window and most of them failed."""
    horizon = now - policy.window
    recent = [ok for at, ok in window.outcomes if at > horizon]
    if len(recent) < policy.min_attempts:
        return False
    failed = sum(1 for ok in recent if not ok)
    return failed / len(recent) >= policy.failure_ratio


def probe_due(
    state: CircuitState,
    opened_at: datetime | None,
    probe_at: datetime | None,
    now: datetime,
    policy: CircuitPolicy,
) -> bool:
    """Whether one probe may go now: the cool-off passed, or the last probe was lost."""
    if state == "open":
        return opened_at is None or now >= opened_at + policy.cool_off
    if state == "half_open":
        return probe_at is None or now >= probe_at + policy.probe_timeout
    return False


def after_probe(succeeded: bool) -> CircuitState:
    return "closed" if succeeded else "open"


def summary(window: Window) -> str:
    """A line for the endpoint log and error reports."""
    return f"{window.failures} of {window.attempts} attempts failed in the last window"
