"""How the UI shows values and reads its query strings: pure helpers, no request, no database."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from qhook.domain.ids import MAX_ID, is_id

# Header names whose values a page never shows, whatever a config or an attempt holds.
NONE = "\u2013"  # an en dash: "no value"

# Badge colour per status or endpoint state (CSS classes in app.css).
BADGES = {
    "succeeded": "ok",
    "ok": "ok",
    "valid": "ok",
    "pending": "info",
    "retrying": "warn",
    "held": "warn",
    "throttled": "warn",
    "paused": "warn",
    "unsigned": "muted",
    "no secret": "muted",
    "cancelled": "muted",
    "failed": "bad",
    "circuit_open": "bad",
    "failing": "bad",
    "invalid": "bad",
    "broken": "bad",
    "fired": "ok",
    "active": "ok",
    "not fired": "muted",
    "inactive": "muted",
}


def badge_class(status: str | None) -> str:
    return BADGES.get(status or "", "muted")


def endpoint_state(state: str, attempts: int, succeeded: int, last_ok: bool | None = None) -> str:
    """What the Endpoints page says: ``failing`` for an endpoint whose circuit is still closed
    while most of the last hour's calls failed (it said a green "ok" beside "0.0 % of 3"), unless
    its newest call succeeded: a receiver fixed ten minutes ago read "failing" for the rest of
    the hour, and the person who fixed it could not tell whether it worked."""
    if state == "ok" and attempts and succeeded * 2 < attempts and not last_ok:
        return "failing"
    return state


def pretty_body(text: str | None) -> str:
    """JSON bodies indented for reading; anything else as it came."""
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def pretty_json(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def when(moment: datetime | None) -> str:
    """UTC, to the second, with the zone said: people compare these with their receiver's logs."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def millis(value: float | None) -> str:
    if value is None:
        return NONE
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.0f} ms"


def percent(share: float | None) -> str:
    return NONE if share is None else f"{share * 100:.1f} %"


def parse_moment(raw: str, name: str, errors: list[str]) -> datetime | None:
    """An ISO 8601 time from a filter box; without a zone it is taken as UTC (the UI shows UTC)."""
    text = raw.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        errors.append(f"{name}: expected a time like 2025-10-02T13:37 (UTC), got {text!r}")
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_id(raw: str, name: str, errors: list[str]) -> int | None:
    text = raw.strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 12 or not is_id(int(text)):
        errors.append(f"{name}: expected an id from 1 to {MAX_ID}, got {text!r}")
        return None
    return int(text)


def body_cut(body: str | None, limit: int) -> bool:
    """Whether a stored answer may have been cut at QHOOK_RESPONSE_BODY_LIMIT: the sender keeps
    that many bytes and no more (a character the cut split becomes one U+FFFD)."""
    if not body or limit <= 0:
        return False
    return len(body.encode("utf-8", "surrogatepass")) >= limit - 3


MAX_OFFSET = 10_000_000


def parse_offset(raw: str, errors: list[str]) -> int:
    """A page's start, 0 when not given; a problem and 0 when not a whole number in range."""
    text = raw.strip()
    if not text:
        return 0
    if not (text.isascii() and text.isdigit()) or len(text) > 8 or int(text) > MAX_OFFSET:
        errors.append(f"offset: expected a whole number from 0 to {MAX_OFFSET:,}, got {text!r}")
        return 0
    return int(text)


def text_or_none(raw: str) -> str | None:
    text = raw.strip()
    return text or None


def describe_triggers(triggers: Mapping[str, Any]) -> list[str]:
    """Each trigger in words, e.g. 'modification of status_, ph_'."""
    said: list[str] = []
    for name, value in triggers.items():
        if value in (None, False):
            continue
        if name == "modification" and isinstance(value, Mapping) and value.get("fields"):
            said.append("modification of " + ", ".join(str(f) for f in value["fields"]))
        elif name == "on_date" and isinstance(value, Mapping):
            offset = value.get("offset")
            said.append(f"on date of {value.get('field')}" + (f" {offset}" if offset else ""))
        else:
            said.append(name)
    return said
