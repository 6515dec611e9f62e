"""The bench's alternation: every contender runs once a round, and each round starts one later."""

from __future__ import annotations

from collections.abc import Callable

from bench.harness import alternate


def test_each_round_starts_one_contender_later_and_results_stay_by_contender() -> None:
    order: list[str] = []

    def contender(name: str) -> Callable[[], float]:
        def run() -> float:
            order.append(name)
            return float(len(order))  # which run of all this was

        return run

    results = alternate(4, {name: contender(name) for name in "abc"})
    assert order == list("abcbcacababc")
    assert results == {"a": [1.0, 6.0, 8.0, 10.0], "b": [2.0, 4.0, 9.0, 11.0], "c": [3.0, 5.0, 7.0, 12.0]}
