"""Rate strings such as ``30/minute``: parsing, pure."""

from __future__ import annotations

from dataclasses import dataclass

from qhook.errors import ValidationFailed

_PERIODS = {"second": 1, "sec": 1, "s": 1, "minute": 60, "min": 60, "m": 60, "hour": 3600, "h": 3600}


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` events per ``period_s`` seconds."""

    limit: int
    period_s: int

    def __str__(self) -> str:
        name = {1: "second", 60: "minute", 3600: "hour"}.get(self.period_s, f"{self.period_s}s")
        return f"{self.limit}/{name}"


def parse_rate(text: str, field: str = "rate_limit") -> Rate:
    """Parse ``N/second|minute|hour``; a clear error names the field otherwise."""
    count, _, unit = text.strip().partition("/")
    period = _PERIODS.get(unit.strip().lower())
    if not (count.strip().isascii() and count.strip().isdigit()) or period is None or int(count) < 1:
        raise ValidationFailed(
            f"{field}: expected '<count>/<second|minute|hour>', e.g. '30/minute', got {text!r}",
            details=[{"field": field, "error": "expected '<count>/<second|minute|hour>'"}],
        )
    return Rate(int(count), period)
