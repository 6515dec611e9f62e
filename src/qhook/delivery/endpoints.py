"""Per-endpoint state inside one worker: waiting lanes, in-flight cap, pauses, circuit window.

The shared truth (Retry-After pauses, circuit state, rate counters) lives in the database
(``store.endpoints``, ``store.rates``); a gate mirrors it so the worker can stop sending at once.
Everything here runs on the event loop; no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from qhook.domain import circuit
from qhook.domain.endpoint_limits import DEFAULT_MAX_IN_FLIGHT
from qhook.domain.rates import Rate

T = TypeVar("T")
# A fresh event is served first; every RETRY_TURN-th start goes to a waiting retry so retries
# never starve under steady fresh traffic, yet a retry backlog never delays fresh events much.
RETRY_TURN = 4


@dataclass
class Gate(Generic[T]):
    """One origin as this worker sees it."""

    origin: str
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    rate: Rate | None = None
    in_flight: int = 0
    first: deque[T] = field(default_factory=deque)
    retry: deque[T] = field(default_factory=deque)
    paused_until: float = 0.0  # loop time: Retry-After or rate-limit wait
    blocked: bool = False  # circuit open, paused by an operator, or throttled by another worker
    window: circuit.Window = field(default_factory=circuit.Window)
    starts: int = 0
    timer_armed: bool = False

    @property
    def waiting(self) -> int:
        return len(self.first) + len(self.retry)

    def push(self, item: T, *, is_retry: bool, front: bool = False) -> None:
        lane = self.retry if is_retry else self.first
        if front:
            lane.appendleft(item)
        else:
            lane.append(item)

    def can_start(self, loop_now: float) -> bool:
        return (
            not self.blocked
            and self.paused_until <= loop_now
            and self.in_flight < self.max_in_flight
            and self.waiting > 0
        )

    def pop(self) -> tuple[T, bool]:
        """The next item to send and whether it came from the retry lane."""
        self.starts += 1
        if self.retry and (not self.first or self.starts % RETRY_TURN == 0):
            return self.retry.popleft(), True
        return self.first.popleft(), False

    def drain(self) -> list[T]:
        """Take every waiting item out (to give its lease back)."""
        items = [*self.first, *self.retry]
        self.first.clear()
        self.retry.clear()
        return items

    def record(self, now: datetime, succeeded: bool, policy: circuit.CircuitPolicy) -> bool:
        """Count an outcome; True when the circuit should open now."""
        self.window = circuit.record(self.window, now, succeeded, policy)
        return not succeeded and circuit.should_open(self.window, now, policy)


class Gates(Generic[T]):
    """All gates of a worker, created on first use."""

    def __init__(self) -> None:
        self._gates: dict[str, Gate[T]] = {}

    def get(self, origin: str) -> Gate[T]:
        gate = self._gates.get(origin)
        if gate is None:
            gate = self._gates[origin] = Gate(origin)
        return gate

    def __iter__(self) -> Iterator[Gate[T]]:
        return iter(list(self._gates.values()))

    def saturated(self, per_endpoint: int) -> list[str]:
        """Origins the next claim should skip: enough waiting here already, or blocked."""
        return [
            g.origin for g in self._gates.values() if g.blocked or g.waiting + g.in_flight >= per_endpoint
        ]

    def forget_idle(self) -> None:
        """Drop gates with nothing waiting, in flight, or remembered (bounded memory)."""
        for origin, gate in list(self._gates.items()):
            if not gate.waiting and not gate.in_flight and not gate.blocked and gate.window.empty:
                del self._gates[origin]
