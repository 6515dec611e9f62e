"""Users, API keys and UI sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from qhook.store.db import Tx
from qhook.store.tables import api_keys, ui_sessions, users

FIRST_ADMIN = "admin"  # the user the very first start makes


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    name: str
    role: str
    set_ids: tuple[int, ...] | None
    active: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: int
    user_id: int
    user_name: str
    label: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _user(row: Any) -> UserRecord:
    set_ids = tuple(row.set_ids) if row.set_ids is not None else None
    return UserRecord(row.id, row.name, row.role, set_ids, row.active, row.created_at)


def insert_user(
    tx: Tx, *, name: str, role: str, password_hash: str | None, set_ids: list[int] | None, now: datetime
) -> UserRecord:
    row = tx.execute(
        insert(users)
        .values(
            name=name, role=role, password_hash=password_hash, set_ids=set_ids, active=True, created_at=now
        )
        .returning(users)
    ).one()
    return _user(row)


def insert_first_admin(tx: Tx, *, password_hash: str, now: datetime) -> UserRecord | None:
    """``FIRST_ADMIN``, unless another process starting at the same moment made it first (None)."""
    dialect_insert = postgresql_insert if tx.dialect.name == "postgresql" else sqlite_insert
    row = tx.execute(
        dialect_insert(users)
        .values(
            name=FIRST_ADMIN,
            role="admin",
            password_hash=password_hash,
            set_ids=None,
            active=True,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=[users.c.name])
        .returning(users)
    ).one_or_none()
    return _user(row) if row else None


def user_by_name(tx: Tx, name: str) -> tuple[UserRecord, str | None] | None:
    row = tx.execute(select(users).where(users.c.name == name)).one_or_none()
    return (_user(row), row.password_hash) if row else None


def user_by_id(tx: Tx, user_id: int) -> UserRecord | None:
    row = tx.execute(select(users).where(users.c.id == user_id)).one_or_none()
    return _user(row) if row else None


def list_users(tx: Tx) -> list[UserRecord]:
    return [_user(r) for r in tx.execute(select(users).order_by(users.c.id))]


def count_users(tx: Tx) -> int:
    return int(tx.execute(select(func.count()).select_from(users)).scalar_one())


def update_user(tx: Tx, user_id: int, **values: Any) -> UserRecord | None:
    row = tx.execute(
        update(users).where(users.c.id == user_id).values(**values).returning(users)
    ).one_or_none()
    return _user(row) if row else None


def forget_set(tx: Tx, set_id: int) -> list[str]:
    """Take a deleted set out of every user's restriction; the names of the users changed.

    SQLite gives a new row the highest id plus one, so the id of the newest set comes back for the
    next set made: a user limited to the deleted set would see the new one. A user whose last set
    goes keeps an empty restriction (no sets), never ``null`` (every set)."""
    changed: list[str] = []
    for row in tx.execute(select(users.c.id, users.c.name, users.c.set_ids)):  # JSON null is not SQL NULL
        if row.set_ids is not None and set_id in row.set_ids:
            kept = [i for i in row.set_ids if i != set_id]
            tx.execute(update(users).where(users.c.id == row.id).values(set_ids=kept))
            changed.append(row.name)
    return changed


_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.user_id,
    users.c.name.label("user_name"),
    api_keys.c.label,
    api_keys.c.prefix,
    api_keys.c.created_at,
    api_keys.c.last_used_at,
    api_keys.c.revoked_at,
)


def _key(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        row.id,
        row.user_id,
        row.user_name,
        row.label,
        row.prefix,
        row.created_at,
        row.last_used_at,
        row.revoked_at,
    )


def insert_api_key(
    tx: Tx, *, user_id: int, label: str, prefix: str, key_hash: str, now: datetime
) -> ApiKeyRecord:
    key_id = tx.execute(
        insert(api_keys)
        .values(user_id=user_id, label=label, prefix=prefix, key_hash=key_hash, created_at=now)
        .returning(api_keys.c.id)
    ).scalar_one()
    found = api_key_by_id(tx, key_id)
    assert found is not None
    return found


def api_key_by_id(tx: Tx, key_id: int) -> ApiKeyRecord | None:
    row = tx.execute(
        select(*_KEY_COLUMNS).join(users, users.c.id == api_keys.c.user_id).where(api_keys.c.id == key_id)
    ).one_or_none()
    return _key(row) if row else None


_ACTIVE_KEY = (
    select(
        *_KEY_COLUMNS,
        users.c.role,
        users.c.set_ids,
        users.c.active,
        users.c.created_at.label("user_created"),
    )
    .join(users, users.c.id == api_keys.c.user_id)
    .where(
        api_keys.c.key_hash == bindparam("key_hash", type_=String),
        api_keys.c.revoked_at.is_(None),
        users.c.active.is_(True),
    )
)  # built once: it runs on every API request


def active_key_by_hash(tx: Tx, key_hash: str) -> tuple[ApiKeyRecord, UserRecord] | None:
    """The unrevoked key with this hash and its active user."""
    row = tx.execute(_ACTIVE_KEY, {"key_hash": key_hash}).one_or_none()
    if row is None:
        return None
    set_ids = tuple(row.set_ids) if row.set_ids is not None else None
    return _key(row), UserRecord(row.user_id, row.user_name, row.role, set_ids, row.active, row.user_created)


_TOUCH_KEY = (
    update(api_keys)
    .where(api_keys.c.id == bindparam("key_id", type_=Integer))
    .values(last_used_at=bindparam("now", type_=api_keys.c.last_used_at.type))
)


def touch_api_key(tx: Tx, key_id: int, now: datetime) -> None:
    tx.execute(_TOUCH_KEY, {"key_id": key_id, "now": now})


def list_api_keys(tx: Tx, user_id: int | None = None) -> list[ApiKeyRecord]:
    query = select(*_KEY_COLUMNS).join(users, users.c.id == api_keys.c.user_id).order_by(api_keys.c.id)
    if user_id is not None:
        query = query.where(api_keys.c.user_id == user_id)
    return [_key(r) for r in tx.execute(query)]


def revoke_api_key(tx: Tx, key_id: int, now: datetime) -> bool:
    done = tx.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return bool(done.rowcount)


def insert_session(tx: Tx, *, token_hash: str, user_id: int, now: datetime, expires_at: datetime) -> None:
    tx.execute(
        insert(ui_sessions).values(
            token_hash=token_hash, user_id=user_id, created_at=now, expires_at=expires_at
        )
    )


def session_user(tx: Tx, token_hash: str, now: datetime) -> UserRecord | None:
    row = tx.execute(
        select(users)
        .join(ui_sessions, ui_sessions.c.user_id == users.c.id)
        .where(
            ui_sessions.c.token_hash == token_hash, ui_sessions.c.expires_at > now, users.c.active.is_(True)
        )
    ).one_or_none()
    return _user(row) if row else None


def delete_session(tx: Tx, token_hash: str) -> None:
    tx.execute(delete(ui_sessions).where(ui_sessions.c.token_hash == token_hash))


def password_hash_of(tx: Tx, user_id: int) -> str | None:
    hashed: str | None = tx.execute(select(users.c.password_hash).where(users.c.id == user_id)).scalar()
    return hashed


def delete_sessions_of(tx: Tx, user_id: int, keep_hash: str | None = None) -> int:
    """End the user's UI sessions (all but ``keep_hash``, the one making the change)."""
    query = delete(ui_sessions).where(ui_sessions.c.user_id == user_id)
    if keep_hash is not None:
        query = query.where(ui_sessions.c.token_hash != keep_hash)
    return int(tx.execute(query).rowcount or 0)


def count_active_admins(tx: Tx) -> int:
    return int(
        tx.execute(
            select(func.count()).select_from(users).where(users.c.role == "admin", users.c.active.is_(True))
        ).scalar_one()
    )
