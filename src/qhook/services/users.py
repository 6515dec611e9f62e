"""Users, API keys, UI sessions, the bootstrap admin and the per-key rate limit."""

from __future__ import annotations

import contextlib
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from qhook.clock import utcnow
from qhook.crypto import new_token, sha256_hex
from qhook.domain.access import Principal, role_from_text
from qhook.domain.rates import Rate
from qhook.errors import (
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    ValidationFailed,
    field_error,
)
from qhook.services import audit
from qhook.store import rates
from qhook.store import sets as set_store
from qhook.store import users as store
from qhook.store.db import Database, Tx
from qhook.store.users import ApiKeyRecord, UserRecord

_hasher = PasswordHasher()
SESSION_LIFETIME = timedelta(hours=12)
FIRST_ADMIN = store.FIRST_ADMIN


@dataclass(frozen=True, slots=True)
class RateState:
    """What the X-RateLimit-* headers say."""

    limit: int
    remaining: int
    retry_after_s: int


def principal_of(user: UserRecord, key_id: int | None = None) -> Principal:
    set_ids = frozenset(user.set_ids) if user.set_ids is not None else None
    return Principal(user.id, user.name, role_from_text(user.role), set_ids, key_id)


def create_user(
    db: Database,
    name: str,
    role: str,
    password: str | None = None,
    set_ids: list[int] | None = None,
    actor: str = "system",
) -> UserRecord:
    name = _user_name(name)
    try:
        role_from_text(role)
    except ValueError as exc:
        raise field_error("role", str(exc)) from exc
    if password is not None:
        _check_password(password)
    password_hash = _hasher.hash(password) if password else None
    if set_ids is not None:
        set_ids = _set_ids(set_ids)
    with db.transaction() as tx:
        folded = name.casefold()
        twin = next((u for u in store.list_users(tx) if u.name.casefold() == folded), None)
        if twin is not None:
            raise Conflict(f"name: a user named {twin.name!r} exists already (names ignore case)")
        if set_ids is not None:
            _check_sets_exist(tx, set_ids)
        user = store.insert_user(
            tx, name=name, role=role, password_hash=password_hash, set_ids=set_ids, now=utcnow()
        )
        audit.record(
            tx, actor, "user.create", "user", user.id, {"name": name, "role": role, "set_ids": set_ids}
        )
    return user


RESERVED_NAMES = frozenset({"system", "cli", "scheduler"})
"""Who the audit trail names for qhook's own changes: a user of that name could not be told apart."""


def _user_name(raw: str) -> str:
    name = raw.strip()
    if not name:
        raise field_error("name", "a non-empty user name")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
        raise field_error("name", "a user name without control or invisible characters")
    if name.casefold() in RESERVED_NAMES:
        raise field_error("name", f"a name other than {name!r}, which the audit trail uses for qhook itself")
    return name


def list_users(db: Database) -> list[UserRecord]:
    with db.reading() as tx:
        return store.list_users(tx)


class Keep(Enum):
    """An argument left out: the value stays as it is (``None`` means something for ``set_ids``)."""

    KEEP = "keep"


KEEP = Keep.KEEP


def get_user(db: Database, user_id: int) -> UserRecord:
    with db.reading() as tx:
        user = store.user_by_id(tx, user_id)
    if user is None:
        raise NotFound(f"user {user_id}: no such user")
    return user


def user_named(db: Database, name: str) -> UserRecord:
    with db.reading() as tx:
        found = store.user_by_name(tx, name)
    if found is None:
        raise NotFound(f"user: no user named {name!r}")
    return found[0]


def _set_ids(set_ids: list[int]) -> list[int]:
    if any(i < 1 for i in set_ids):
        raise field_error("set_ids", "set ids (positive integers), or null for every set")
    return sorted(set(set_ids))


def _check_sets_exist(tx: Tx, set_ids: list[int]) -> None:
    # A restriction to an id no set has would hand the user whatever set gets that id next.
    missing = set_store.missing_ids(tx, set_ids)
    if missing:
        raise field_error(
            "set_ids", f"ids of existing sets; there is no set {', '.join(str(i) for i in missing)}"
        )


def _check_password(password: str, field: str = "password") -> None:
    if len(password) < 8:
        raise field_error(field, "at least 8 characters")
    if not password.strip():  # eight spaces were accepted
        raise field_error(field, "at least 8 characters, not only spaces")


def update_user(
    db: Database,
    user_id: int,
    *,
    actor: str,
    role: str | None = None,
    set_ids: list[int] | Keep | None = KEEP,
    active: bool | None = None,
    password: str | None = None,
) -> UserRecord:
    """Change role, set restriction, active flag or password, audited (never the password).

    Keys and sessions resolve their user on every request, so a new role or restriction applies
    at once; deactivating ends the user's sessions and stops their keys, a new password ends their
    sessions. The last active admin cannot be demoted or deactivated.
    """
    values: dict[str, object] = {}
    details: dict[str, object] = {}
    if role is not None:
        try:
            role_from_text(role)
        except ValueError as exc:
            raise field_error("role", str(exc)) from exc
        values["role"] = details["role"] = role
    if not isinstance(set_ids, Keep):
        values["set_ids"] = details["set_ids"] = _set_ids(set_ids) if set_ids is not None else None
    if active is not None:
        values["active"] = details["active"] = active
    if password is not None:
        _check_password(password)
        values["password_hash"] = _hasher.hash(password)
        details["password_changed"] = True
    if not values:
        raise ValidationFailed("Nothing to change: give role, set_ids, active or password")
    with db.transaction() as tx:
        before = store.user_by_id(tx, user_id)
        if before is None:
            raise NotFound(f"user {user_id}: no such user")
        if isinstance(values.get("set_ids"), list):
            _check_sets_exist(tx, cast(list[int], values["set_ids"]))
        user = store.update_user(tx, user_id, **values)
        assert user is not None
        if before.role == "admin" and before.active and store.count_active_admins(tx) == 0:
            raise Conflict(f"{before.name} is the last active admin: make another admin first")
        if not user.active or password is not None:
            store.delete_sessions_of(tx, user_id)
        audit.record(tx, actor, "user.update", "user", user_id, {"name": user.name, **details})
    return user


def change_own_password(
    db: Database, user_id: int, current: str, new: str, keep_session: str | None = None
) -> None:
    """A person's own change: the current password must match; their other sessions end.

    Wrong current passwords are limited as sign-in tries are (their own bucket, so a guesser does
    not lock the owner out of signing in): anyone holding a stolen API key or session could try
    passwords here without end, and a hit handed over the account."""
    _check_password(new, "new_password")
    counted = _count_try(db, [(f"password:user:{user_id}", LOGIN_RATE_PER_NAME)], None, "wrong passwords")
    with db.transaction() as tx:
        hashed = store.password_hash_of(tx, user_id)
        try:
            if hashed is None:
                raise VerificationError("no password set")
            _hasher.verify(hashed, current)
        except (VerificationError, InvalidHashError) as exc:
            raise Forbidden("current_password: does not match your current password") from exc
        user = store.update_user(tx, user_id, password_hash=_hasher.hash(new))
        assert user is not None
        keep = sha256_hex(keep_session) if keep_session else None
        store.delete_sessions_of(tx, user_id, keep_hash=keep)
        audit.record(tx, user.name, "user.password", "user", user_id, {"name": user.name})
    _take_back(db, counted)


def bootstrap_admin(db: Database) -> tuple[str, str] | None:
    """On the very first start, create ``admin`` with a random password; return (name, password) once.

    Processes starting together on a fresh database race for it: the one whose insert loses
    finds the admin made by another (it crashed on the unique name)."""
    with db.transaction() as tx:
        if store.count_users(tx) > 0:
            return None
        password = secrets.token_urlsafe(12)
        user = store.insert_first_admin(tx, password_hash=_hasher.hash(password), now=utcnow())
        if user is None:
            return None
        audit.record(tx, "system", "user.create", "user", user.id, {"name": FIRST_ADMIN, "role": "admin"})
    return FIRST_ADMIN, password


# Password guessing, failed tries per window: per user name from one address; per user name from
# all addresses (a spread-out guesser); per address (one guesser, many names). The first is the
# tight one: counted per name alone, anyone could lock the admin out by failing ten times.
LOGIN_RATE_PER_NAME = Rate(10, 15 * 60)
LOGIN_RATE_PER_NAME_EVERYWHERE = Rate(100, 15 * 60)
LOGIN_RATE_PER_SOURCE = Rate(50, 15 * 60)
_DUMMY_HASH = _hasher.hash("no such user: the same work as a real check")


def check_login(
    db: Database,
    name: str,
    password: str,
    source: str,
    now: datetime | None = None,
    *,
    known_browser: bool = False,
) -> UserRecord:
    """``check_password`` behind shared per-name and per-address limits (RateLimited past them).

    Every try is counted before the password is checked (parallel guesses cannot slip past the
    limit), and a successful one is then taken back: the limits are on failed tries. Counting
    successes locked out people who simply logged in often, and behind a proxy, where everyone
    shares one address, the whole site at once.
    """
    buckets = [
        (f"login:name:{name.lower()}:from:{source}", LOGIN_RATE_PER_NAME),
        (f"login:source:{source}", LOGIN_RATE_PER_SOURCE),
    ]
    if not known_browser:
        # A guesser with many addresses trips this one and holds the name off the UI: a browser
        # this user signed in with before (``known_browser``) is not held by it.
        buckets.append((f"login:name:{name.lower()}", LOGIN_RATE_PER_NAME_EVERYWHERE))
    counted = _count_try(db, buckets, now, "login attempts")
    user = check_password(db, name, password)
    _take_back(db, counted)
    return user


def _count_try(
    db: Database, buckets: list[tuple[str, Rate]], now: datetime | None, what: str
) -> list[tuple[str, int]]:
    """Count one try in each bucket (RateLimited past one); (bucket, window) to take it back."""
    now_ms = int((now or utcnow()).timestamp() * 1000)
    counted: list[tuple[str, int]] = []
    with db.transaction() as tx:
        for bucket, rate in buckets:
            count, window_start_ms = rates.hit(tx, bucket, period_ms=rate.period_s * 1000, now_ms=now_ms)
            counted.append((bucket, window_start_ms))
            if count > rate.limit:
                state = _rate_state(rate, count, window_start_ms, now_ms)
                raise _limited(f"Too many {what}; try again in {state.retry_after_s} s", state)
    return counted


def _take_back(db: Database, counted: list[tuple[str, int]]) -> None:
    """A try that succeeded: the limits are on failed ones."""
    with db.transaction() as tx:
        for bucket, window_start_ms in counted:
            rates.take_back(tx, bucket, window_start_ms=window_start_ms)


def check_password(db: Database, name: str, password: str) -> UserRecord:
    with db.reading() as tx:
        found = store.user_by_name(tx, name)
    if found is None or found[1] is None or not found[0].active:
        # Verify against a dummy hash so an unknown name takes as long as a wrong password.
        with contextlib.suppress(VerificationError, InvalidHashError):
            _hasher.verify(_DUMMY_HASH, password)
        raise Unauthorized("Unknown user or wrong password")
    try:
        _hasher.verify(found[1], password)
    except (VerificationError, InvalidHashError) as exc:
        raise Unauthorized("Unknown user or wrong password") from exc
    return found[0]


def create_api_key(
    db: Database, user_name: str, label: str = "", actor: str = "system"
) -> tuple[ApiKeyRecord, str]:
    """Make a key for ``user_name``; the plain key is returned here and never again."""
    plain = new_token("qhk")
    with db.transaction() as tx:
        found = store.user_by_name(tx, user_name)
        if found is None:
            raise NotFound(f"user: no user named {user_name!r}")
        key = store.insert_api_key(
            tx, user_id=found[0].id, label=label, prefix=plain[:12], key_hash=sha256_hex(plain), now=utcnow()
        )
        audit.record(tx, actor, "apikey.create", "api_key", key.id, {"user": user_name, "label": label})
    return key, plain


def list_api_keys(db: Database, user_name: str | None = None) -> list[ApiKeyRecord]:
    with db.reading() as tx:
        user_id = None
        if user_name is not None:
            found = store.user_by_name(tx, user_name)
            if found is None:
                raise NotFound(f"user: no user named {user_name!r}")
            user_id = found[0].id
        return store.list_api_keys(tx, user_id)


def revoke_api_key(db: Database, key_id: int, actor: str = "system") -> ApiKeyRecord:
    with db.transaction() as tx:
        if not store.revoke_api_key(tx, key_id, utcnow()):
            raise NotFound(f"api key {key_id}: no such active key")
        audit.record(tx, actor, "apikey.revoke", "api_key", key_id, None)
        key = store.api_key_by_id(tx, key_id)
    assert key is not None
    return key


def _rate_state(rate: Rate, count: int, window_start_ms: int, now_ms: int) -> RateState:
    """X-RateLimit-Retry-After is how long to wait before the next request (AlisQI's connector
    says so): 0 while calls remain, else the seconds until the window ends. Clients that waited
    it after every answer waited up to a minute with 29 calls left."""
    remaining = max(0, rate.limit - count)
    retry_after_s = (
        max(1, -(-(window_start_ms + rate.period_s * 1000 - now_ms) // 1000)) if not remaining else 0
    )
    return RateState(rate.limit, remaining, retry_after_s)


def _limited(message: str, state: RateState) -> RateLimited:
    error = RateLimited(message, retry_after_s=state.retry_after_s)
    error.rate_state = state  # type: ignore[attr-defined]
    return error


def source_bucket(source: str) -> str:
    """The shared counter of requests from one client address that carried no valid API key."""
    return f"addr:{source}"


def count_request(db: Database, bucket: str, rate: Rate, now: datetime | None = None) -> RateState:
    """Count one request in a shared bucket; RateLimited (carrying the header values) past the limit."""
    now_ms = int((now or utcnow()).timestamp() * 1000)
    with db.transaction() as tx:
        count, window_start_ms = rates.hit(tx, bucket, period_ms=rate.period_s * 1000, now_ms=now_ms)
    state = _rate_state(rate, count, window_start_ms, now_ms)
    if count > rate.limit:
        raise _limited(f"Rate limit of {rate} exceeded; retry in {state.retry_after_s} s", state)
    return state


def count_key_request(db: Database, plain: str, rate: Rate, now: datetime | None = None) -> RateState | None:
    """Count a request that carried ``plain`` but was answered before its key was checked (an
    operation qhook does not have, a body refused while parsing) against that key's limit; None
    when no active key has it. RateLimited past the limit."""
    now_ms = int((now or utcnow()).timestamp() * 1000)
    with db.autocommit() as tx:
        found = store.active_key_by_hash(tx, sha256_hex(plain))
        if found is None:
            return None
        count, window_start_ms = rates.hit(
            tx, f"apikey:{found[0].id}", period_ms=rate.period_s * 1000, now_ms=now_ms
        )
    state = _rate_state(rate, count, window_start_ms, now_ms)
    if count > rate.limit:
        raise _limited(f"Rate limit of {rate} exceeded; retry in {state.retry_after_s} s", state)
    return state


KEY_TOUCH_INTERVAL = timedelta(minutes=1)
"""A key's last-used time is kept to the minute: one row write per key per minute, not per request."""


def authenticate_key(
    db: Database, plain: str, rate: Rate, now: datetime | None = None, source: str | None = None
) -> tuple[Principal, RateState]:
    """Resolve an API key, count the request against its limit and keep its last-used time.

    Raises Unauthorized for an unknown or revoked key and RateLimited past the limit; the counter
    lives in the database, so every process behind a load balancer shares it. While ``source`` (the
    client address) is over its limit of requests without a valid key, no key is even looked at:
    a key guesser learns nothing until the window ends.
    """
    now = now or utcnow()
    if not plain:
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'")
    now_ms = int(now.timestamp() * 1000)
    period_ms = rate.period_s * 1000
    # Each statement stands alone (the counter's upsert is atomic by itself): on PostgreSQL no
    # BEGIN and COMMIT round trips on every API request.
    with db.autocommit() as tx:
        if source is not None:
            seen = rates.peek(tx, source_bucket(source), period_ms=period_ms, now_ms=now_ms)
            if seen is not None and seen[0] > rate.limit:
                state = _rate_state(rate, seen[0], seen[1], now_ms)
                raise _limited(
                    f"Too many requests without a valid API key from {source}; "
                    f"retry in {state.retry_after_s} s",
                    state,
                )
        found = store.active_key_by_hash(tx, sha256_hex(plain))
        if found is None:
            raise Unauthorized("Invalid or revoked API key")
        key, user = found
        count, window_start_ms = rates.hit(tx, f"apikey:{key.id}", period_ms=period_ms, now_ms=now_ms)
        if key.last_used_at is None or now - key.last_used_at >= KEY_TOUCH_INTERVAL:
            store.touch_api_key(tx, key.id, now)
    state = _rate_state(rate, count, window_start_ms, now_ms)
    if count > rate.limit:
        raise _limited(f"Rate limit of {rate} exceeded; retry in {state.retry_after_s} s", state)
    return principal_of(user, key.id), state


def open_session(db: Database, user: UserRecord) -> str:
    token = new_token("qhs")
    now = utcnow()
    with db.transaction() as tx:
        store.insert_session(
            tx, token_hash=sha256_hex(token), user_id=user.id, now=now, expires_at=now + SESSION_LIFETIME
        )
    return token


def session_principal(db: Database, token: str) -> Principal | None:
    with db.reading() as tx:
        user = store.session_user(tx, sha256_hex(token), utcnow())
    return principal_of(user) if user else None


def close_session(db: Database, token: str) -> None:
    """Log out: the session stops working at once, not when its cookie would expire."""
    with db.transaction() as tx:
        store.delete_session(tx, sha256_hex(token))


def csrf_token(session_token: str) -> str:
    """The anti-CSRF token of a UI session: derived from the (HttpOnly) session token, so a page of
    another site can neither read nor compute it, and nothing more needs storing."""
    return sha256_hex("csrf:" + session_token)


def require_password(password: str | None) -> str:
    if not password:
        raise ValidationFailed("password: required")
    return password
