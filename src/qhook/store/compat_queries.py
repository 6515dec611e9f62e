"""Store helpers the AlisQI-compatible API and the CSV import need beyond the results store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from qhook.store.db import Tx


@contextmanager
def savepoint(tx: Tx) -> Iterator[None]:
    """A nested transaction: an exception inside rolls back only what happened inside it."""
    with tx.begin_nested():
        yield
