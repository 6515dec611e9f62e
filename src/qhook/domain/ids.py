"""Sortable unique ids ("evt_01J...", "msg_01J...") and opaque page cursors. Pure but for randomness."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, TypeGuard, TypeVar

from qhook.errors import field_error

MAX_ID = 2**31 - 1
"""The largest id of sets, results, workflows, signals, users and auth profiles (INTEGER columns).
PostgreSQL compares a parameter with such a column as an INTEGER: a larger number from outside
was a 500 there, as a number beyond 64 bits was from either database's driver."""
MAX_BIG_ID = 2**63 - 1
"""The largest id of events, deliveries, attempts, captures and audit entries (BIGINT columns)."""


def is_id(value: object) -> TypeGuard[int]:
    """A set, result, workflow, signal, user or auth profile id as JSON may carry one."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


# Crockford's base32, as ULID uses: no I, L, O, U; sorts like the numbers it encodes.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two digits per 10 bits: a ulid is 13 lookups (ids are made for every event and delivery).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = range(120, -1, -10)


class _Row(Protocol):
    @property
    def id(self) -> int: ...


RowT = TypeVar("RowT", bound=_Row)


def _base32(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def ulid(now: datetime, randomness: bytes | None = None) -> str:
    """26 characters: 48 bits of milliseconds since the epoch, then 80 random bits."""
    millis = int(now.timestamp() * 1000) & ((1 << 48) - 1)
    noise = randomness if randomness is not None else secrets.token_bytes(10)
    if len(noise) != 10:
        raise ValueError("ulid randomness must be 10 bytes")
    value = millis << 80 | int.from_bytes(noise, "big")  # 128 bits as 26 digits (130 bits)
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def new_uid(prefix: str, now: datetime) -> str:
    """A public id such as "evt_01J9Z..."; ids made later sort after earlier ones (to the millisecond)."""
    return f"{prefix}_{ulid(now)}"


def encode_cursor(last_id: int) -> str:
    """An opaque cursor for "the page after the row with this id"."""
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, maximum: int = MAX_BIG_ID) -> int:
    """The id a cursor points after; ValueError for anything this module did not make."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("not a cursor this API returned") from exc
    kind, _, number = text.partition(":")
    if kind != "id" or not (number.isascii() and number.isdigit()) or int(number) > maximum:
        raise ValueError("not a cursor this API returned")
    return int(number)


def read_cursor(
    cursor: str | None,
    expected: str = "a next_cursor value from a previous page",
    *,
    maximum: int = MAX_BIG_ID,
) -> int | None:
    """The id a client's cursor points after (None for the first page); a 422 naming ``cursor`` else.
    ``maximum``: ``MAX_ID`` for pages of a table with INTEGER ids."""
    if not cursor:
        return None
    try:
        return decode_cursor(cursor, maximum)
    except ValueError as exc:
        raise field_error("cursor", expected) from exc


def cut_page(rows: Sequence[RowT], limit: int) -> tuple[list[RowT], str | None]:
    """Rows read with ``limit + 1``: the first ``limit`` and the next page's cursor (None on the last)."""
    page = list(rows[:limit])
    return page, encode_cursor(page[-1].id) if page and len(rows) > limit else None
