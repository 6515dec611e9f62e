"""What the UI's pages say about states, pure."""

from __future__ import annotations

import pytest

from qhook.web import present


@pytest.mark.parametrize(
    ("state", "attempts", "succeeded", "shown"),
    [
        ("ok", 0, 0, "ok"),  # nothing tried in the last hour
        ("ok", 3, 0, "failing"),
        ("ok", 4, 1, "failing"),
        ("ok", 4, 2, "ok"),  # half made it
        ("ok", 1, 1, "ok"),
        ("circuit_open", 10, 0, "circuit_open"),  # the stronger word stays
        ("paused", 3, 0, "paused"),
        ("throttled", 2, 0, "throttled"),
    ],
)
def test_endpoint_state(state: str, attempts: int, succeeded: int, shown: str) -> None:
    assert present.endpoint_state(state, attempts, succeeded) == shown
    assert present.endpoint_state(state, attempts, succeeded, last_ok=False) == shown
    assert present.badge_class(shown) == {"ok": "ok", "failing": "bad", "circuit_open": "bad"}.get(
        shown, "warn"
    )


@pytest.mark.parametrize(
    ("body", "limit", "cut"),
    [
        ("ok", 65536, False),
        ("", 10, False),
        (None, 10, False),
        ("x" * 10, 10, True),
        ("x" * 7, 10, True),  # a multi-byte character split by the cut is one U+FFFD (3 bytes)
        ("x" * 6, 10, False),
        ("é" * 5, 10, True),
        ("x" * 100, 0, False),  # no limit: nothing is cut
    ],
)
def test_body_cut(body: str | None, limit: int, cut: bool) -> None:
    assert present.body_cut(body, limit) is cut


def test_an_endpoint_whose_newest_call_succeeded_is_not_failing() -> None:
    """Fixed ten minutes ago, it read "failing" for the rest of the hour."""
    assert present.endpoint_state("ok", 10, 2, last_ok=True) == "ok"
    assert present.endpoint_state("ok", 10, 2, last_ok=False) == "failing"
