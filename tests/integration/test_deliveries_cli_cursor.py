"""``qhook deliveries list --cursor`` pages through the whole log on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from qhook.cli import app
from qhook.context import AppContext
from tests.conftest import TEST_SECRET_KEY
from tests.support.hub_data import add_delivery


@pytest.fixture
def run(db_url: str, tmp_path: Path, ctx: AppContext):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    env = {
        "QHOOK_DATABASE_URL": db_url,
        "QHOOK_DATA_DIR": str(tmp_path / "var"),
        "QHOOK_SECRET_KEY": TEST_SECRET_KEY,
        "COLUMNS": "200",
    }

    def _run(*args: str) -> Result:
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    return _run


def ids_listed(output: str) -> list[int]:
    return [int(m) for m in re.findall(r"^\s*│?\s*(\d+)\s+│", output, re.M)]


def next_cursor(output: str) -> str | None:
    last = output.strip().splitlines()[-1]
    return last.split()[-1] if last.startswith("next cursor: ") else None


def test_pages_with_cursor(run, ctx: AppContext) -> None:  # type: ignore[no-untyped-def]
    made = [add_delivery(ctx.db, status="failed") for _ in range(5)]
    add_delivery(ctx.db, status="succeeded")
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        args = ["deliveries", "list", "--status", "failed", "--limit", "2"]
        listed = run(*args, *(["--cursor", cursor] if cursor else []))
        assert listed.exit_code == 0, listed.output
        seen += ids_listed(listed.stdout)
        pages += 1
        cursor = next_cursor(listed.stdout)
        if cursor is None:
            assert "1 delivery" in listed.stdout and "--cursor" not in listed.stdout
            break
        assert "2 deliveries; for the next page" in listed.stdout
    assert pages == 3
    assert seen == sorted(made, reverse=True)  # every failed one once, newest first

    bad = run("deliveries", "list", "--cursor", "garbage!")
    assert bad.exit_code == 1 and "cursor" in bad.output
