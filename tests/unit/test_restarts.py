"""The restart rule shared by ``qhook serve``'s worker and the delivery processes."""

from __future__ import annotations

from qhook.domain import restarts


def test_pauses_double_to_a_minute_while_it_keeps_stopping() -> None:
    stops, pauses = 0, []
    for _ in range(9):
        stops = restarts.in_a_row(stops, ran_s=0.5)
        pauses.append(restarts.pause_s(stops))
    assert pauses == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_a_run_longer_than_a_minute_starts_the_count_again() -> None:
    assert restarts.in_a_row(6, ran_s=61.0) == 1
    assert restarts.in_a_row(6, ran_s=60.0) == 7
