"""Public ids (``ids.new_uid``) made by the thousand: one read of randomness, encoded in C.

A storeResults call makes an id for every event and every delivery (six per result in the
benchmark); one ``secrets.token_bytes`` and thirteen table lookups per id showed in its profile.
A ULID is 10 Crockford digits of milliseconds, then 16 of randomness (80 bits). Here the
milliseconds come from ``ids.ulid`` once per distinct time, and the random digits from one
``os.urandom`` mapped byte by byte with ``bytes.translate``: each byte's low five bits pick a
digit, so every digit is uniform and independent, as the 80 random bits of ``ids.ulid`` are.
"""

from __future__ import annotations

import os
from datetime import datetime

from qhook.domain.ids import ulid

_DIGITS = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_BYTE_TO_DIGIT = bytes(_DIGITS[b & 31] for b in range(256))  # 256 is 8 x 32: no digit favoured
_ZERO = bytes(10)


def random_parts(count: int) -> str:
    """``count`` ULID random parts (16 Crockford digits each), concatenated."""
    return os.urandom(16 * count).translate(_BYTE_TO_DIGIT).decode()


class UidSource:
    """``new_uid(prefix, now)`` as ``ids.new_uid`` makes it, for many ids in a row."""

    __slots__ = ("_head", "_last", "_noise", "_position", "_refill")

    def __init__(self, expected: int = 64) -> None:
        self._refill = max(16, expected)
        self._noise = ""
        self._position = 0
        self._last: datetime | None = None
        self._head = ""

    def new_uid(self, prefix: str, now: datetime) -> str:
        if now is not self._last:
            self._head = ulid(now, _ZERO)[:10]
            self._last = now
        if self._position >= len(self._noise):
            self._noise = random_parts(self._refill)
            self._position = 0
        start = self._position
        self._position = start + 16
        return f"{prefix}_{self._head}{self._noise[start : start + 16]}"
