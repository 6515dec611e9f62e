"""EXPLAIN exactly what a store function sends, on SQLite and PostgreSQL (for plan tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event

from qhook.store.db import Tx


def explain(tx: Tx, run: Callable[[Tx], object]) -> str:
    """The plan of the first statement (with its parameters) that ``run`` sends on ``tx``."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.append((statement, parameters))

    event.listen(tx, "before_cursor_execute", capture)
    try:
        run(tx)
    finally:
        event.remove(tx, "before_cursor_execute", capture)
    statement, parameters = seen[0]
    if tx.dialect.name == "postgresql":
        return "\n".join(r[0] for r in tx.exec_driver_sql("EXPLAIN " + statement, parameters).all())
    rows = tx.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
    return "\n".join(r[-1] for r in rows)
