"""Workflow triggers: which events a workflow listens to, validated and matched purely."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

import isodate

from qhook.domain.filters import FieldLike, deactivated_expected
from qhook.errors import ValidationFailed

ACTIONS = ("new", "modified", "deleted", "date", "manual")
TRIGGER_KEYS = ("entry", "modification", "deletion", "manual", "on_date")


@dataclass(frozen=True, slots=True)
class OnDate:
    field: str
    offset: str  # ISO 8601 duration, may be negative ("-P7D")
    at: time  # local time for date fields (QHOOK_TIMEZONE); ignored for datetime fields
    field_type: str  # date | datetime

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "offset": self.offset, "at": self.at.strftime("%H:%M")}


@dataclass(frozen=True, slots=True)
class Triggers:
    entry: bool = False
    modification: bool = False
    modification_fields: tuple[str, ...] = ()  # empty: any field
    deletion: bool = False
    manual: bool = False
    on_date: OnDate | None = None

    def as_json(self) -> dict[str, Any]:
        """The normalised form stored on the workflow row and returned by the API."""
        out: dict[str, Any] = {
            "entry": self.entry,
            "modification": {"fields": list(self.modification_fields)} if self.modification else False,
            "deletion": self.deletion,
            "manual": self.manual,
        }
        out["on_date"] = self.on_date.as_json() if self.on_date else None
        return out

    @property
    def actions(self) -> frozenset[str]:
        """Event actions this workflow can fire on (used for overlap warnings)."""
        on = {
            "new": self.entry,
            "modified": self.modification,
            "deleted": self.deletion,
            "date": self.on_date is not None,
            "manual": self.manual,
        }
        return frozenset(action for action, enabled in on.items() if enabled)


def _fail(path: str, expected: str) -> ValidationFailed:
    return ValidationFailed(f"{path}: {expected}", details=[{"field": path, "error": expected}])


def _flag(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _fail(f"triggers.{key}", "true or false")
    return value


def parse_offset(text: Any, path: str) -> str:
    """Check an ISO 8601 duration such as ``-P7D``, ``P1M`` or ``PT2H``; return it as given."""
    if not isinstance(text, str) or not text.strip():
        raise _fail(path, "an ISO 8601 duration, e.g. '-P7D' or 'PT2H'")
    try:
        if not any(c.isdigit() for c in text):  # isodate reads "P" and "PT" as zero
            raise ValueError("no amount")
        duration = isodate.parse_duration(text.strip())
    except (isodate.ISO8601Error, ValueError) as exc:
        raise _fail(path, f"an ISO 8601 duration, e.g. '-P7D' or 'PT2H', got {text!r}") from exc
    # "P9999Y" was accepted and then never scheduled (the due time lies outside the calendar).
    try:
        span = abs((_MIDDLE + duration) - _MIDDLE)
    except (OverflowError, ValueError):
        span = MAX_OFFSET + MAX_OFFSET
    if span > MAX_OFFSET:
        raise _fail(path, f"a duration of at most 100 years either way, got {text!r}")
    return text.strip()


MAX_OFFSET = timedelta(days=36_525)  # 100 years
_MIDDLE = datetime(5000, 1, 1)  # any date far enough from both ends of the calendar


def parse_triggers(raw: Any, fields: Sequence[FieldLike], *, inactive: Collection[str] = ()) -> Triggers:
    """Validate the ``triggers`` object against the set's (active) ``fields``; an absent or false
    key is off. A field that is one of the ``inactive`` (deactivated) ones is refused as such."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _fail("triggers", "an object with entry, modification, deletion, manual, on_date")
    unknown = sorted(set(raw) - set(TRIGGER_KEYS))
    if unknown:
        raise _fail(f"triggers.{unknown[0]}", f"one of {', '.join(TRIGGER_KEYS)}")
    by_name = {f.name: f for f in fields}
    modification = raw.get("modification")
    mod_on, mod_fields = False, ()
    if modification is True:
        mod_on = True
    elif isinstance(modification, dict):
        extra = set(modification) - {"fields"}
        if extra:
            raise _fail(f"triggers.modification.{sorted(extra)[0]}", "only 'fields'")
        names = modification.get("fields") or []
        if not isinstance(names, list):
            raise _fail("triggers.modification.fields", "a list of field names")
        for i, name in enumerate(names):
            if isinstance(name, str) and name in inactive:
                raise _fail(f"triggers.modification.fields[{i}]", deactivated_expected(name))
            if not isinstance(name, str) or (name not in by_name and name != "date"):
                raise _fail(f"triggers.modification.fields[{i}]", f"a field of the set, got {name!r}")
        mod_on, mod_fields = True, tuple(dict.fromkeys(names))
    elif modification not in (None, False):
        raise _fail("triggers.modification", "true, false or {'fields': [...]}")
    on_date = None
    raw_on_date = raw.get("on_date")
    if raw_on_date not in (None, False):
        on_date = _parse_on_date(raw_on_date, by_name, inactive)
    return Triggers(
        entry=_flag(raw, "entry"),
        modification=mod_on,
        modification_fields=mod_fields,
        deletion=_flag(raw, "deletion"),
        manual=_flag(raw, "manual"),
        on_date=on_date,
    )


def _parse_on_date(raw: Any, fields: Mapping[str, FieldLike], inactive: Collection[str]) -> OnDate:
    if not isinstance(raw, dict):
        raise _fail("triggers.on_date", "an object {'field', 'offset', 'at'}")
    extra = set(raw) - {"field", "offset", "at"}
    if extra:
        raise _fail(f"triggers.on_date.{sorted(extra)[0]}", "only 'field', 'offset' and 'at'")
    name = raw.get("field")
    if isinstance(name, str) and name in inactive:
        raise _fail("triggers.on_date.field", deactivated_expected(name))
    field = fields.get(name) if isinstance(name, str) else None
    if field is None or field.type not in ("date", "datetime"):
        dated = ", ".join(n for n, f in fields.items() if f.type in ("date", "datetime")) or "none"
        raise _fail("triggers.on_date.field", f"a date or datetime field of the set ({dated}), got {name!r}")
    offset = parse_offset(raw.get("offset", "P0D"), "triggers.on_date.offset")
    at_text = raw.get("at", "00:00")
    try:
        at = time.fromisoformat(at_text) if isinstance(at_text, str) else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is not None:
        raise _fail("triggers.on_date.at", f"a local time 'HH:MM', got {at_text!r}")
    return OnDate(
        field=field.name, offset=offset, at=at.replace(second=0, microsecond=0), field_type=field.type
    )


def named_fields(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The fields stored triggers name, as (place, field name)."""
    found: list[tuple[str, str]] = []
    modification = raw.get("modification")
    if isinstance(modification, dict):
        for i, name in enumerate(modification.get("fields") or ()):
            found.append((f"triggers.modification.fields[{i}]", str(name)))
    on_date = raw.get("on_date")
    if isinstance(on_date, dict) and on_date.get("field") is not None:
        found.append(("triggers.on_date.field", str(on_date["field"])))
    return found


def deactivated(raw: Mapping[str, Any], inactive: Collection[str]) -> str | None:
    """Where stored triggers name a field since deactivated, as the save-time check says it; None
    when they name none. Only that: stored triggers are not checked again against today's rules
    (a rule tightened later would stop workflows that were saved under the old one)."""
    for place, name in named_fields(raw):
        if name in inactive:
            return f"{place}: {deactivated_expected(name)}"
    return None


def triggers_from_json(raw: Mapping[str, Any], field_types: Mapping[str, str]) -> Triggers:
    """Rebuild stored (already validated) triggers without re-checking them."""
    modification = raw.get("modification")
    on_date = None
    if raw.get("on_date"):
        od = raw["on_date"]
        on_date = OnDate(
            field=od["field"],
            offset=od.get("offset", "P0D"),
            at=time.fromisoformat(od.get("at", "00:00")),
            field_type=field_types.get(od["field"], "date"),
        )
    return Triggers(
        entry=bool(raw.get("entry")),
        modification=modification is True or isinstance(modification, dict),
        modification_fields=tuple(modification.get("fields") or ()) if isinstance(modification, dict) else (),
        deletion=bool(raw.get("deletion")),
        manual=bool(raw.get("manual")),
        on_date=on_date,
    )


def match(triggers: Triggers, action: str, changes: Mapping[str, Any]) -> tuple[bool, str]:
    """Does an event with ``action`` and ``changes`` trigger the workflow? (matched, reason)."""
    if action == "new":
        return (True, "trigger: entry") if triggers.entry else (False, _off(triggers, "entry"))
    if action == "deleted":
        return (True, "trigger: deletion") if triggers.deletion else (False, _off(triggers, "deletion"))
    if action == "date":
        return (True, "trigger: on_date") if triggers.on_date else (False, _off(triggers, "on_date"))
    if action == "manual":
        return (True, "trigger: manual") if triggers.manual else (False, "trigger: manual runs are off")
    if action == "modified":
        if not triggers.modification:
            return False, _off(triggers, "modification")
        if not changes:
            return False, "trigger: modification, but nothing changed"
        changed = ", ".join(changes)
        if triggers.modification_fields:
            if not any(name in changes for name in triggers.modification_fields):
                limited = ", ".join(triggers.modification_fields)
                return False, f"trigger: modification limited to {limited}, changed: {changed}"
            return True, f"trigger: modification of {changed}"
        return True, f"trigger: modification of {changed}"
    return False, f"trigger: unknown action {action!r}"


def _off(triggers: Triggers, name: str) -> str:
    if triggers.actions == {"manual"}:
        return "manual only"
    if not triggers.actions:
        return "no trigger is on"
    return f"trigger: {name} is off"
