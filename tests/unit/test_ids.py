"""domain.ids: ids from outside within what their columns hold; cursors within theirs."""

from __future__ import annotations

import pytest

from qhook.domain import ids


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (1, True),
        (ids.MAX_ID, True),
        (ids.MAX_ID + 1, False),
        (0, False),
        (-3, False),
        (True, False),
        ("7", False),
    ],
)
def test_is_id(value: object, valid: bool) -> None:
    assert ids.is_id(value) is valid


def test_a_cursor_reads_back_within_its_maximum() -> None:
    assert ids.decode_cursor(ids.encode_cursor(ids.MAX_BIG_ID)) == ids.MAX_BIG_ID
    with pytest.raises(ValueError):
        ids.decode_cursor(ids.encode_cursor(ids.MAX_BIG_ID + 1))
    assert ids.read_cursor(ids.encode_cursor(ids.MAX_ID), maximum=ids.MAX_ID) == ids.MAX_ID
    with pytest.raises(Exception, match="cursor"):
        ids.read_cursor(ids.encode_cursor(ids.MAX_ID + 1), maximum=ids.MAX_ID)
