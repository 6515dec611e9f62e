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


BUCKET_S = 10  # outcomes are counted per 10-second bucket: O(window / bucket) per outcome


@dataclass(frozen=True, slots=True)
class Window:
    """Recent attempt outcomes of one endpoint, oldest first: (bucket start epoch s, attempts, failures)."""

    buckets: tuple[tuple[int, int, int], ...] = field(default=())

    @property
    def attempts(self) -> int:
        return sum(b[1] for b in self.buckets)

    @property
    def failures(self) -> int:
        return sum(b[2] for b in self.buckets)

    @property
    def empty(self) -> bool:
        return not self.buckets


def _horizon(now: datetime, policy: CircuitPolicy) -> int:
    return int((now - policy.window).timestamp()) // BUCKET_S * BUCKET_S


def record(window: Window, now: datetime, succeeded: bool, policy: CircuitPolicy) -> Window:
    """The window with one more outcome, buckets older than ``policy.window`` dropped."""
    bucket = int(now.timestamp()) // BUCKET_S * BUCKET_S
    failed = 0 if succeeded else 1
    buckets = window.buckets
    if buckets and buckets[-1][0] == bucket:
        last = buckets[-1]
        return Window((*buckets[:-1], (bucket, last[1] + 1, last[2] + failed)))
    horizon = _horizon(now, policy)
    kept = tuple(b for b in buckets if b[0] > horizon)
    return Window((*kept, (bucket, 1, failed)))


def should_open(window: Window, now: datetime, policy: CircuitPolicy) -> bool:
    """Sustained failure: enough attempts in the window and most of them failed."""
    horizon = _horizon(now, policy)
    recent = [b for b in window.buckets if b[0] > horizon]
    return sustained_failure(sum(b[1] for b in recent), sum(b[2] for b in recent), policy)


def sustained_failure(attempts: int, failures: int, policy: CircuitPolicy) -> bool:
    """Enough attempts in the window and most of them failed (counts from any number of workers)."""
    if attempts < policy.min_attempts:
        return False
    return failures / attempts >= policy.failure_ratio


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
