"""Per-endpoint limits: concurrency cap and rate limit decisions. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qhook.domain.rates import Rate, parse_rate

DEFAULT_MAX_IN_FLIGHT = 10
MAX_IN_FLIGHT_LIMIT = 1000


def max_in_flight_of(config: Mapping[str, Any], endpoint_override: int | None = None) -> int:
    """The endpoint's concurrency cap: the endpoint row's value wins over the signal's, default 10."""
    value = endpoint_override or config.get("max_in_flight") or DEFAULT_MAX_IN_FLIGHT
    return max(1, min(int(value), MAX_IN_FLIGHT_LIMIT))


def share_of(cap: int, index: int, processes: int) -> int:
    """Process ``index``'s part of ``cap`` when the ``processes`` of one ``qhook worker --processes``
    share it: the parts add up to ``cap`` (the first ones take the remainder), and every process
    gets at least 1, so with more processes than ``cap`` the sum is ``processes``."""
    if processes <= 1:
        return cap
    part = cap // processes + (1 if index < cap % processes else 0)
    return max(part, 1)


def rate_of(config: Mapping[str, Any], endpoint_override: str | None = None) -> Rate | None:
    """The endpoint's rate limit (``30/minute``) or None when unlimited."""
    text = endpoint_override or config.get("rate_limit")
    return parse_rate(str(text)) if text else None


MAX_RATE_SLOTS = 1000


def rate_slots(rate: Rate) -> tuple[int, int]:
    """(slots, period in ms) of the shared slot ring for ``rate``.

    A limit above MAX_RATE_SLOTS is kept as the same rate over a shorter period (10000/hour as
    1000 per 6 minutes), so the ring stays small.
    """
    slots = min(rate.limit, MAX_RATE_SLOTS)
    return slots, rate.period_s * 1000 * slots // rate.limit


def rate_key(origin: str, rate: Rate) -> str:
    return f"endpoint:{origin}:{rate}"
