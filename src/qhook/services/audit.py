"""Write audit entries inside the transaction of the change they describe."""

from __future__ import annotations

from typing import Any

from qhook.clock import utcnow
from qhook.store import audit as store
from qhook.store.audit import AuditRecord
from qhook.store.db import Database, Tx


def record(tx: Tx, actor: str, action: str, target_type: str, target_id: object, details: Any) -> None:
    """Callers pass details without secrets; this function does not inspect them."""
    store.insert_entry(
        tx,
        at=utcnow(),
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        details=details,
    )


def list_entries(
    db: Database, *, limit: int = 100, before_id: int | None = None, target_type: str | None = None
) -> list[AuditRecord]:
    with db.reading() as tx:
        return store.list_entries(tx, limit=limit, before_id=before_id, target_type=target_type)
