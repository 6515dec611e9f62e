"""When to start again a worker that stopped (``qhook serve``'s in-process worker, a delivery
process of ``qhook worker --processes``). Pure.

After 1 s, doubling to a minute while it keeps stopping; one that ran longer than a minute before
it stopped counts as stopping for the first time again.
"""

from __future__ import annotations

MOST_S = 60.0


def in_a_row(previous: int, ran_s: float) -> int:
    """Stops in a row, counting this one, after ``previous`` and a run of ``ran_s`` seconds."""
    return 1 if ran_s > MOST_S else previous + 1


def pause_s(stops: int) -> float:
    """Seconds to wait before starting again after the ``stops``-th stop in a row."""
    return min(2.0 ** (stops - 1), MOST_S)
