"""The encrypted values the database holds: every one is checked at start against
QHOOK_SECRET_KEY, and ``qhook rekey`` encrypts them all again with its newest key."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from sqlalchemy import Column, Table, select, update

from qhook.store.db import Tx
from qhook.store.tables import auth_profiles, inspector_bins, oauth_tokens, signals

# (what it is, its table, its key column, the encrypted column)
_PLACES: tuple[tuple[str, Table, Column[object], Column[object]], ...] = (
    ("signal", signals, signals.c.id, signals.c.secret_enc),
    ("signal (previous secret)", signals, signals.c.id, signals.c.previous_secret_enc),
    ("auth profile", auth_profiles, auth_profiles.c.id, auth_profiles.c.secrets_enc),
    ("OAuth token of auth profile", oauth_tokens, oauth_tokens.c.auth_profile_id, oauth_tokens.c.token_enc),
    ("inspector bin", inspector_bins, inspector_bins.c.id, inspector_bins.c.secret_enc),
)


def stored(tx: Tx) -> Iterator[tuple[str, str]]:
    """(where, token) for every encrypted value, newest first within each kind. A check at start
    that tried only the newest of each kind passed while older secrets, made with a key since
    dropped, failed every delivery of their signals."""
    for kind, _table, key, column in _PLACES:
        for row in tx.execute(select(key, column).where(column.is_not(None)).order_by(key.desc())):
            yield f"{kind} {row[0]}", str(row[1])


def reencrypt(tx: Tx, rotate: Callable[[str], str]) -> int:
    """Every encrypted value written again with ``rotate`` (the newest key); how many."""
    count = 0
    for _kind, table, key, column in _PLACES:
        rows = tx.execute(select(key, column).where(column.is_not(None))).all()
        for row_key, token in rows:
            tx.execute(update(table).where(key == row_key).values({column.name: rotate(str(token))}))
            count += 1
    return count
