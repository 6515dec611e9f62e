"""An app context on a database that subprocesses (``qhook worker``, ``qhook serve``) share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qhook.context import AppContext, open_context
from qhook.settings import Settings
from tests.conftest import TEST_SECRET_KEY


@contextmanager
def shared_context(folder: Path, database_url: str = "") -> Iterator[AppContext]:
    """SQLite in ``folder/var`` (or ``database_url``), loopback targets allowed; disposed after."""
    settings = Settings(
        data_dir=folder / "var",
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,  # type: ignore[arg-type]
        allow_http=True,
        allowed_target_networks="127.0.0.0/8",
    )
    context = open_context(settings)
    try:
        yield context
    finally:
        context.db.dispose()
