"""qhook.outage: a line at the first failed try and every twentieth; pauses double to a ceiling."""

from __future__ import annotations

from qhook import outage


def test_said_at_the_first_try_and_every_twentieth() -> None:
    assert [n for n in range(1, 61) if outage.worth_saying(n)] == [1, 20, 40, 60]


def test_pauses_double_up_to_the_ceiling() -> None:
    assert [outage.pause_s(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    assert outage.pause_s(3, most_s=3.0) == 3.0
