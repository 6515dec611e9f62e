"""A SQLite database whose folder qhook cannot write is refused at open, naming the folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qhook import context
from qhook.context import open_context
from qhook.errors import QhookError
from qhook.settings import Settings
from tests.conftest import TEST_SECRET_KEY


def test_a_read_only_folder_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a read-only folder SQLite cannot write its -wal and -shm files; qhook said only
    "Database unavailable: unable to open database file". (Root passes any mode bits, so the
    folder's being read-only is what ``os.access`` answers here.)"""
    settings = Settings(data_dir=tmp_path / "var", secret_key=TEST_SECRET_KEY)  # type: ignore[arg-type]
    open_context(settings).db.dispose()  # the database exists
    folder = (tmp_path / "var").resolve()
    real_access = os.access
    monkeypatch.setattr(
        context.os, "access", lambda path, mode: False if Path(path) == folder else real_access(path, mode)
    )
    with pytest.raises(QhookError) as refused:
        open_context(settings)
    assert f"the SQLite database {folder / 'qhook.db'} and its folder must be writable" in str(refused.value)
