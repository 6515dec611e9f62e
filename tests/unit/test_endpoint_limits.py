"""Per-endpoint limits: the cap, and its split among the processes of one ``qhook worker``."""

from __future__ import annotations

import pytest

from qhook.domain.endpoint_limits import max_in_flight_of, share_of


def test_the_endpoints_own_cap_wins_over_the_signals() -> None:
    assert max_in_flight_of({"max_in_flight": 5}, 7) == 7
    assert max_in_flight_of({"max_in_flight": 5}) == 5
    assert max_in_flight_of({}) == 10


@pytest.mark.parametrize(
    ("cap", "processes", "parts"),
    [
        (10, 1, [10]),
        (10, 2, [5, 5]),
        (5, 2, [3, 2]),
        (7, 3, [3, 2, 2]),
        (2, 2, [1, 1]),
        (1, 2, [1, 1]),  # every process may send: at least 1 each
        (2, 4, [1, 1, 1, 1]),
    ],
)
def test_the_processes_parts_add_up_to_the_cap(cap: int, processes: int, parts: list[int]) -> None:
    assert [share_of(cap, i, processes) for i in range(processes)] == parts


def test_the_parts_never_exceed_the_cap_when_it_is_at_least_the_process_count() -> None:
    for cap in range(1, 60):
        for processes in range(1, cap + 1):
            assert sum(share_of(cap, i, processes) for i in range(processes)) == cap
