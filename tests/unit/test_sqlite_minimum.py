"""qhook refuses an SQLite library too old for its SQL, and says what to do."""

from __future__ import annotations

import sqlite3

import pytest

from qhook.errors import StoreError
from qhook.store import db


@pytest.mark.parametrize(
    ("version", "has_json", "found"),
    [((3, 31, 1), True, "3.31.1"), ((3, 34, 1), True, "3.34.1"), ((3, 37, 2), False, "3.37.2 without")],
)
def test_too_old_or_without_json_is_refused(
    version: tuple[int, int, int], has_json: bool, found: str
) -> None:
    with pytest.raises(StoreError) as raised:
        db.check_sqlite(version, has_json)
    assert "SQLite 3.35.0 or newer" in raised.value.message
    assert found in raised.value.message
    assert "PostgreSQL" in raised.value.message


@pytest.mark.parametrize("version", [(3, 35, 0), (3, 40, 1), (3, 46, 0)])
def test_new_enough_with_json_is_accepted(version: tuple[int, int, int]) -> None:
    db.check_sqlite(version, True)


def test_this_machine_qualifies() -> None:
    db.check_sqlite(sqlite3.sqlite_version_info, db._has_json())
