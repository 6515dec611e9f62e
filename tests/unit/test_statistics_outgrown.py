"""When PostgreSQL's planner statistics of the deliveries table count as outgrown (queue.py)."""

from __future__ import annotations

import pytest

from qhook.store.queue import STATISTICS_SLACK_ROWS, statistics_outgrown


@pytest.mark.parametrize(
    ("recorded", "live", "outgrown"),
    [
        (-1.0, STATISTICS_SLACK_ROWS, False),  # never analysed, still small
        (-1.0, STATISTICS_SLACK_ROWS + 1, True),  # never analysed, a burst arrived
        (0.0, 0, False),  # analysed empty, still empty
        (0.0, STATISTICS_SLACK_ROWS + 1, True),  # analysed empty, then a burst
        (10_000.0, 20_000 + STATISTICS_SLACK_ROWS, False),  # grew, not past twice and the slack
        (10_000.0, 20_001 + STATISTICS_SLACK_ROWS, True),
        (10_000.0, 500, False),  # shrank (delivered and purged): the old plans still fit
    ],
)
def test_statistics_count_as_outgrown_past_twice_the_recorded_rows_and_the_slack(
    recorded: float, live: int, outgrown: bool
) -> None:
    assert statistics_outgrown(recorded, live) is outgrown
