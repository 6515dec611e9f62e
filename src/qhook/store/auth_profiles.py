"""Auth profiles (secrets stay encrypted here) and the shared OAuth2 token cache."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update

from qhook.store.db import Tx
from qhook.store.tables import auth_profiles, oauth_tokens, signals, workflows


@dataclass(frozen=True, slots=True)
class AuthProfileRow:
    id: int
    name: str
    type: str
    config: dict[str, Any]  # non-secret parts: username, header_name, token_url, allowed_domains, ...
    secrets_enc: str  # encrypted JSON object of the secret parts
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StoredToken:
    auth_profile_id: int
    token_enc: str
    expires_at: datetime
    fetched_at: datetime


def _row(row: Any) -> AuthProfileRow:
    return AuthProfileRow(
        row.id, row.name, row.type, dict(row.config or {}), row.secrets_enc, row.created_at, row.updated_at
    )


def insert_profile(
    tx: Tx, *, name: str, type: str, config: dict[str, Any], secrets_enc: str, now: datetime
) -> AuthProfileRow:
    row = tx.execute(
        insert(auth_profiles)
        .values(name=name, type=type, config=config, secrets_enc=secrets_enc, created_at=now, updated_at=now)
        .returning(auth_profiles)
    ).one()
    return _row(row)


def profile_by_id(tx: Tx, profile_id: int) -> AuthProfileRow | None:
    row = tx.execute(select(auth_profiles).where(auth_profiles.c.id == profile_id)).one_or_none()
    return _row(row) if row else None


def profile_by_name(tx: Tx, name: str) -> AuthProfileRow | None:
    row = tx.execute(select(auth_profiles).where(auth_profiles.c.name == name)).one_or_none()
    return _row(row) if row else None


def list_profiles(tx: Tx) -> list[AuthProfileRow]:
    return [_row(r) for r in tx.execute(select(auth_profiles).order_by(auth_profiles.c.id))]


def update_profile(tx: Tx, profile_id: int, **values: Any) -> AuthProfileRow | None:
    row = tx.execute(
        update(auth_profiles)
        .where(auth_profiles.c.id == profile_id)
        .values(**values)
        .returning(auth_profiles)
    ).one_or_none()
    return _row(row) if row else None


def delete_profile(tx: Tx, profile_id: int) -> bool:
    result = tx.execute(delete(auth_profiles).where(auth_profiles.c.id == profile_id))
    return bool(result.rowcount)


@dataclass(frozen=True, slots=True)
class ProfileUse:
    signal_id: int
    workflow_id: int
    workflow_name: str
    set_id: int
    url: str


def uses_of(tx: Tx, profile_id: int) -> list[ProfileUse]:
    """Active webhook signals whose config names the profile (few rows; filtered here, portable)."""
    rows = tx.execute(
        select(signals.c.id, signals.c.config, signals.c.workflow_id, workflows.c.name, workflows.c.set_id)
        .join(workflows, workflows.c.id == signals.c.workflow_id)
        .where(signals.c.type == "webhook", signals.c.active.is_(True))
        .order_by(signals.c.id)
    )
    return [
        ProfileUse(r.id, r.workflow_id, r.name, r.set_id, str((r.config or {}).get("url", "")))
        for r in rows
        if (r.config or {}).get("auth_profile_id") == profile_id
    ]


def token_for(tx: Tx, profile_id: int) -> StoredToken | None:
    row = tx.execute(select(oauth_tokens).where(oauth_tokens.c.auth_profile_id == profile_id)).one_or_none()
    if row is None:
        return None
    return StoredToken(row.auth_profile_id, row.token_enc, row.expires_at, row.fetched_at)


def save_token(
    tx: Tx, profile_id: int, *, token_enc: str, expires_at: datetime, fetched_at: datetime
) -> None:
    """Insert or replace the profile's token (delete + insert works the same on both databases)."""
    tx.execute(delete(oauth_tokens).where(oauth_tokens.c.auth_profile_id == profile_id))
    tx.execute(
        insert(oauth_tokens).values(
            auth_profile_id=profile_id, token_enc=token_enc, expires_at=expires_at, fetched_at=fetched_at
        )
    )


def delete_token(tx: Tx, profile_id: int) -> None:
    tx.execute(delete(oauth_tokens).where(oauth_tokens.c.auth_profile_id == profile_id))
