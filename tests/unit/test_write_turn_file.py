"""A SQLite database whose folder has no room for the write-turn file still serves."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from qhook.store import db as db_module
from qhook.store.db import Database


def test_no_turn_file_means_sqlite_locking_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_open = os.open

    def refuse_turn_file(path: str, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith("-turn"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(db_module.os, "open", refuse_turn_file)
    with caplog.at_level(logging.WARNING, logger="qhook.store.db"):
        database = Database(f"sqlite:///{tmp_path / 'q.db'}")
    assert "no write-turn file" in caplog.text and "Permission denied" in caplog.text
    with database.transaction() as tx:
        tx.execute(text("CREATE TABLE t (n INTEGER)"))
        tx.execute(text("INSERT INTO t VALUES (1)"))
    with database.reading() as tx:
        assert tx.execute(text("SELECT n FROM t")).scalar() == 1
    database.dispose()
    assert not (tmp_path / "q.db-turn").exists()
