"""sender.storable: what a receiver sent, as text every database stores."""

from __future__ import annotations

import pytest

from qhook.delivery.sender import storable


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("application/json", "application/json"),
        ("café ☕", "café ☕"),  # already text
        ("caf\udce9 \udcff", "café ÿ"),  # Latin-1 bytes as aiohttp reads them (surrogateescape)
        ("a\x00b", "a\ufffdb"),  # PostgreSQL refuses NUL
        ("caf\udce9\x00", "café\ufffd"),
        ("x\ud800y", "x?y"),  # a surrogate no decoder made
    ],
)
def test_storable(raw: str, stored: str) -> None:
    assert storable(raw) == stored
    storable(raw).encode()  # never raises
