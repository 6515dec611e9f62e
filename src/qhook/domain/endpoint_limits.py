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


def rate_of(config: Mapping[str, Any], endpoint_override: str | None = None) -> Rate | None:
    """The endpoint's rate limit (``30/minute``) or None when unlimited."""
    text = endpoint_override or config.get("rate_limit")
    return parse_rate(str(text)) if text else None


def rate_wait_s(rate: Rate, hits_in_window: int, window_start_ms: int, now_ms: int) -> float | None:
    """None when this hit is within the limit, else the seconds until the window reopens."""
    if hits_in_window <= rate.limit:
        return None
    return max((window_start_ms + rate.period_s * 1000 - now_ms) / 1000, 0.01)
