"""Latency percentiles, defined as PostgreSQL's percentile_cont (linear between closest ranks). Pure."""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """The ``fraction`` (0..1) percentile of already sorted values; None for no values."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be between 0 and 1")
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    low = math.floor(position)
    high = math.ceil(position)
    low_value = sorted_values[low]
    return float(low_value + (sorted_values[high] - low_value) * (position - low))


def percentiles(values: Iterable[float | None], fractions: tuple[float, ...]) -> tuple[float | None, ...]:
    """Several percentiles of unsorted values at once, ignoring None as SQL aggregates do."""
    ordered = sorted(float(v) for v in values if v is not None)
    return tuple(percentile(ordered, f) for f in fractions)
