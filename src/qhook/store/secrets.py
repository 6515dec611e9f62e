"""The encrypted values the database holds, sampled to check QHOOK_SECRET_KEY opens them."""

from __future__ import annotations

from sqlalchemy import select

from qhook.store.db import Tx
from qhook.store.tables import auth_profiles, signals


def samples(tx: Tx) -> list[tuple[str, str]]:
    """(where, token): the newest signing secret and the newest auth profile's secrets."""
    found = []
    for kind, key, column in (
        ("signal", signals.c.id, signals.c.secret_enc),
        ("auth profile", auth_profiles.c.id, auth_profiles.c.secrets_enc),
    ):
        row = tx.execute(select(key, column).where(column.is_not(None)).order_by(key.desc()).limit(1)).first()
        if row is not None:
            found.append((f"{kind} {row[0]}", str(row[1])))
    return found
