"""The recorder's rule for how long outcomes wait for others to share their transaction."""

from __future__ import annotations

import pytest

from qhook.delivery.recorder import GATHER_MAX_S, GATHER_S, keep_gathering


def test_outcomes_that_keep_coming_are_gathered() -> None:
    assert keep_gathering(more_came=True, urgent=False, full=False, waited_s=GATHER_S)


def test_a_quiet_step_ends_the_gather() -> None:
    assert not keep_gathering(more_came=False, urgent=False, full=False, waited_s=GATHER_S)


@pytest.mark.parametrize("urgent, full", [(True, False), (False, True)])
def test_an_urgent_outcome_or_a_full_batch_ends_it(urgent: bool, full: bool) -> None:
    assert not keep_gathering(more_came=True, urgent=urgent, full=full, waited_s=GATHER_S)


def test_no_step_goes_past_the_longest_gather() -> None:
    assert keep_gathering(more_came=True, urgent=False, full=False, waited_s=GATHER_MAX_S - GATHER_S)
    assert not keep_gathering(
        more_came=True, urgent=False, full=False, waited_s=GATHER_MAX_S - GATHER_S + 0.001
    )
