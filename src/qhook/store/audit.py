"""The audit log of configuration changes (who, when, what; never secrets)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select

from qhook.store.db import Tx
from qhook.store.tables import audit_log


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str | None
    details: dict[str, Any] | None


def insert_entry(
    tx: Tx, *, at: datetime, actor: str, action: str, target_type: str, target_id: str | None, details: Any
) -> None:
    tx.execute(
        insert(audit_log).values(
            at=at, actor=actor, action=action, target_type=target_type, target_id=target_id, details=details
        )
    )


def list_entries(
    tx: Tx, *, limit: int = 100, before_id: int | None = None, target_type: str | None = None
) -> list[AuditRecord]:
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(audit_log.c.id < before_id)
    if target_type is not None:
        query = query.where(audit_log.c.target_type == target_type)
    return [
        AuditRecord(r.id, r.at, r.actor, r.action, r.target_type, r.target_id, r.details)
        for r in tx.execute(query)
    ]
