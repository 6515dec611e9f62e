"""Percentiles as PostgreSQL's percentile_cont computes them."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qhook.domain.percentiles import percentile, percentiles


def test_known_values() -> None:
    assert percentile([100.0, 200.0, 300.0, 400.0], 0.5) == 250.0
    assert percentile([100.0, 200.0, 300.0, 400.0], 0.95) == pytest.approx(385.0)
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None
    assert percentiles([3, None, 1, 2], (0.0, 0.5, 1.0)) == (1.0, 2.0, 3.0)


def test_fraction_out_of_range() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        percentile([1.0], 1.5)


@given(st.lists(st.integers(0, 100_000), min_size=2, max_size=200))
def test_matches_inclusive_quantiles(values: list[int]) -> None:
    ordered = sorted(float(v) for v in values)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    assert percentile(ordered, 0.5) == pytest.approx(cuts[49])
    assert percentile(ordered, 0.95) == pytest.approx(cuts[94])
    assert min(ordered) <= (percentile(ordered, 0.99) or 0) <= max(ordered)
