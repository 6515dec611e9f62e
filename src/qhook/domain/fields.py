"""Fields of a set and the values of its results: definitions, coercion, presentation, changes. Pure.

Stored values (``results.values`` JSON) per type: list -> option id (int); date -> "YYYY-MM-DD";
datetime -> "YYYY-MM-DDTHH:MM:SSZ" (UTC); number -> float, or a qualified number such as "<321"
kept as the given string; integer -> int; boolean -> bool; text -> str; empty -> absent.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any, Literal

from qhook.errors import Conflict, ValidationFailed

FieldType = Literal["text", "number", "integer", "boolean", "date", "datetime", "list"]
FIELD_TYPES: tuple[FieldType, ...] = ("text", "number", "integer", "boolean", "date", "datetime", "list")
SET_KINDS = ("analysis_set", "selection_list")
SYSTEM_KEYS = frozenset({"date", "@id"})
MAX_OPTION_LABEL = 200  # as a field's label: longer ones came back inside every later error
# Keys the compat API's getResults adds to a result beside its fields: a field of that name would
# be overwritten there.
RESERVED_NAMES = frozenset({*SYSTEM_KEYS, "lastmodificationdate"})
FIELD_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")
# "<321", "> 0.5", "<=10": a measurement below/above what the instrument reports.
QUALIFIED_NUMBER_RE = re.compile(
    r"^(<=|>=|<|>|≤|≥|~)\s*[-+]?([0-9]+([.,][0-9]*)?|[.,][0-9]+)([eE][-+]?[0-9]+)?$"
)
_DECIMAL_COMMA = re.compile(r"^[-+]?[0-9]+,[0-9]+$")
# Python reads "1_5" as 15, and full-width or Arabic-Indic digits as numbers: a typo stored as a
# number ten times too large. Numbers are written with 0-9 only.
_PLAIN_DIGITS = "the digits 0-9 (no '_', no other scripts' digits)"
INTEGER_MIN, INTEGER_MAX = -(2**63), 2**63 - 1  # what every database stores in an integer
_TRUE = frozenset({"true", "1", "yes", "y", "on", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "off", "f"})

StoredValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class OptionDef:
    id: int
    label: str
    active: bool = True


@dataclass(frozen=True, slots=True)
class FieldDef:
    id: int
    name: str
    label: str
    type: FieldType
    required: bool
    active: bool
    position: int
    options: tuple[OptionDef, ...] = ()

    def option_by_id(self, option_id: int) -> OptionDef | None:
        return next((o for o in self.options if o.id == option_id), None)

    def option_by_label(self, label: str) -> OptionDef | None:
        exact = next((o for o in self.options if o.label == label), None)
        if exact is not None:
            return exact
        folded = label.casefold()
        return next((o for o in self.options if o.label.casefold() == folded), None)


class _Invalid(ValueError):
    """One field's problem; collected into ValidationFailed details."""


def _fail(errors: list[dict[str, str]], field: str, expected: str) -> None:
    errors.append({"field": field, "error": expected})


def raise_if_errors(errors: list[dict[str, str]], summary: str = "Invalid input") -> None:
    if errors:
        first = "; ".join(f"{e['field']}: {e['error']}" for e in errors[:3])
        raise ValidationFailed(f"{summary}: {first}", details=errors)


# --- set definitions ---------------------------------------------------------------------------


def _option_labels(raw: object, path: str, errors: list[dict[str, str]]) -> list[tuple[str, bool]]:
    """Options given as labels or as {"label": .., "active": ..} objects, for a new field."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        _fail(errors, path, "a list of option labels")
        return []
    labels: list[tuple[str, bool]] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        label: object = item.get("label") if isinstance(item, dict) else item
        active = item.get("active", True) if isinstance(item, dict) else True
        if isinstance(label, int | float) and not isinstance(label, bool):
            label = str(label)
        if not isinstance(label, str) or not label.strip():
            _fail(errors, f"{path}[{index}]", "a non-empty option label")
            continue
        if len(label.strip()) > MAX_OPTION_LABEL:
            _fail(errors, f"{path}[{index}]", f"an option label of at most {MAX_OPTION_LABEL} characters")
            continue
        if label.strip().casefold() in seen:
            _fail(errors, f"{path}[{index}]", f"a unique label; {label.strip()!r} appears twice")
            continue
        seen.add(label.strip().casefold())
        labels.append((label.strip(), bool(active)))
    return labels


def _bool_attr(
    spec: Mapping[str, Any], key: str, default: bool, path: str, errors: list[dict[str, str]]
) -> bool:
    value = spec.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        _fail(errors, f"{path}.{key}", "true or false")
        return default
    return value


def _label_attr(spec: Mapping[str, Any], default: str, path: str, errors: list[dict[str, str]]) -> str:
    label = spec.get("label")
    if label is None:
        return default
    if not isinstance(label, str) or not label.strip() or len(label) > 200:
        _fail(errors, f"{path}.label", "a non-empty label of at most 200 characters")
        return default
    return label.strip()


def _new_field(
    spec: object, path: str, position: int, taken: set[str], errors: list[dict[str, str]]
) -> FieldDef | None:
    if not isinstance(spec, Mapping):
        _fail(errors, path, "an object with name and type")
        return None
    name = spec.get("name")
    if not isinstance(name, str) or not FIELD_NAME_RE.match(name):
        _fail(errors, f"{path}.name", "a name of letters, digits and _ starting with a letter (e.g. ph_)")
        return None
    if name.casefold() in RESERVED_NAMES:
        _fail(errors, f"{path}.name", f"a name other than the system key {name!r}")
        return None
    if name.casefold() in taken:
        _fail(errors, f"{path}.name", f"a unique name; {name!r} is used already")
        return None
    kind = spec.get("type")
    if kind not in FIELD_TYPES:
        _fail(errors, f"{path}.type", f"one of {', '.join(FIELD_TYPES)}")
        return None
    label = _label_attr(spec, name, path, errors)
    required = _bool_attr(spec, "required", False, path, errors)
    active = _bool_attr(spec, "active", True, path, errors)
    options: tuple[OptionDef, ...] = ()
    if kind == "list":
        labels = _option_labels(spec.get("options"), f"{path}.options", errors)
        options = tuple(OptionDef(i, lab, act) for i, (lab, act) in enumerate(labels, start=1))
    elif spec.get("options"):
        _fail(errors, f"{path}.options", "no options: only list fields have options")
    taken.add(name.casefold())
    return FieldDef(0, name, label, kind, required, active, position, options)


def new_field_defs(specs: object, path: str = "fields") -> tuple[FieldDef, ...]:
    """Validate the fields of a new set; list options get ids 1..n. Field ids are 0 until stored."""
    if not isinstance(specs, list):
        raise ValidationFailed(
            f"{path}: a list of fields", details=[{"field": path, "error": "a list of fields"}]
        )
    errors: list[dict[str, str]] = []
    taken: set[str] = set()
    defs = [_new_field(spec, f"{path}[{i}]", i + 1, taken, errors) for i, spec in enumerate(specs)]
    raise_if_errors(errors, "Invalid set definition")
    return tuple(d for d in defs if d is not None)


def _patched_options(
    field: FieldDef, raw: object, path: str, errors: list[dict[str, str]]
) -> tuple[OptionDef, ...]:
    """Relabel, (de)activate or add options; options not mentioned stay as they are."""
    if not isinstance(raw, list):
        _fail(errors, path, "a list of option labels or {id, label, active} objects")
        return field.options
    options = list(field.options)
    next_id = max((o.id for o in options), default=0) + 1
    for index, item in enumerate(raw):
        where = f"{path}[{index}]"
        if isinstance(item, str | int | float) and not isinstance(item, bool):
            item = {"label": str(item)}
        if not isinstance(item, Mapping):
            _fail(errors, where, "an option label or an {id, label, active} object")
            continue
        label = item.get("label")
        if label is not None and (not isinstance(label, str) or not label.strip()):
            _fail(errors, f"{where}.label", "a non-empty option label")
            continue
        label = label.strip() if isinstance(label, str) else None
        if label is not None and len(label) > MAX_OPTION_LABEL:
            _fail(errors, f"{where}.label", f"an option label of at most {MAX_OPTION_LABEL} characters")
            continue
        active = item.get("active")
        if active is not None and not isinstance(active, bool):
            _fail(errors, f"{where}.active", "true or false")
            continue
        option_id = item.get("id")
        if option_id is None:
            if label is None:
                _fail(errors, where, "a label for the new option")
                continue
            existing = next((o for o in options if o.label.casefold() == label.casefold()), None)
            if existing is not None:
                if active is not None:
                    options[options.index(existing)] = replace(existing, active=active)
                continue
            options.append(OptionDef(next_id, label, True if active is None else active))
            next_id += 1
            continue
        match = next((o for o in options if o.id == option_id), None)
        if match is None or isinstance(option_id, bool):
            _fail(errors, f"{where}.id", f"the id of an option of {field.name}; {option_id!r} is none")
            continue
        if label is not None and any(
            o.label.casefold() == label.casefold() and o.id != match.id for o in options
        ):
            _fail(errors, f"{where}.label", f"a unique label; {label!r} is used by another option")
            continue
        options[options.index(match)] = replace(
            match,
            label=label if label is not None else match.label,
            active=active if active is not None else match.active,
        )
    return tuple(options)


def patched_field_defs(
    existing: Sequence[FieldDef], specs: object, path: str = "fields"
) -> tuple[FieldDef, ...]:
    """Apply a PATCH: add fields, relabel, (de)activate or re-require fields, add and edit options.

    Nothing is ever dropped: fields and options not mentioned stay; a field is matched by name.
    Changing a field's type is refused (409) because stored values would no longer fit it.
    """
    if not isinstance(specs, list):
        raise ValidationFailed(
            f"{path}: a list of fields", details=[{"field": path, "error": "a list of fields"}]
        )
    errors: list[dict[str, str]] = []
    by_name = {f.name: f for f in existing}
    result = list(existing)
    taken = {f.name.casefold() for f in existing}
    position = max((f.position for f in existing), default=0)
    for index, spec in enumerate(specs):
        where = f"{path}[{index}]"
        name = spec.get("name") if isinstance(spec, Mapping) else None
        current = by_name.get(name) if isinstance(name, str) else None
        if current is None:
            position += 1
            added = _new_field(spec, where, position, taken, errors)
            if added is not None:
                result.append(added)
                by_name[added.name] = added
            continue
        assert isinstance(spec, Mapping)
        kind = spec.get("type")
        if kind is not None and kind != current.type:
            raise Conflict(
                f"{where}.type: the type of field {current.name!r} is {current.type} and cannot change "
                f"(stored values would not fit); add a new field instead",
                details=[{"field": f"{where}.type", "error": f"{current.type} (type cannot change)"}],
            )
        updated = replace(
            current,
            label=_label_attr(spec, current.label, where, errors),
            required=_bool_attr(spec, "required", current.required, where, errors),
            active=_bool_attr(spec, "active", current.active, where, errors),
        )
        if "options" in spec and spec["options"] is not None:
            if current.type != "list":
                _fail(errors, f"{where}.options", "no options: only list fields have options")
            else:
                updated = replace(
                    updated, options=_patched_options(current, spec["options"], f"{where}.options", errors)
                )
        result[result.index(current)] = updated
        by_name[current.name] = updated
    raise_if_errors(errors, "Invalid set definition")
    return tuple(result)


# --- values ------------------------------------------------------------------------------------


def parse_datetime(raw: object) -> datetime:
    """ISO 8601 (offset or Z; naive means UTC), "YYYY-MM-DD HH:MM:SS" or a date (midnight UTC)."""
    if isinstance(raw, datetime):
        moment = raw
    elif isinstance(raw, date):
        moment = datetime(raw.year, raw.month, raw.day)
    elif isinstance(raw, str) and raw.strip():
        text = raw.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise _Invalid("a date and time such as 2025-10-02T13:37:00Z") from exc
    else:
        raise _Invalid("a date and time such as 2025-10-02T13:37:00Z")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC).replace(microsecond=0)
    except OverflowError as exc:  # 0001-01-01T00:00:00+05:00 is in the year 0 in UTC
        raise _Invalid("a date and time between the years 1 and 9999 in UTC") from exc


def parse_date(raw: object) -> date:
    """A date field's value (and a filter's value for one): ``YYYY-MM-DD``, or a date and time
    counted by its date as written."""
    if isinstance(raw, datetime):
        return raw.date()
    if isinstance(raw, date):
        return raw
    if isinstance(raw, str) and raw.strip():
        text = raw.strip()
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
        try:
            # "2025-10-02 13:37:00" as the compat API writes dates: the day is what counts, as
            # written ("2026-06-01T23:30:00-05:00" is 1 June; in UTC it was already 2 June).
            parse_datetime(text)  # a moment within the calendar, in any zone
            return datetime.fromisoformat(text[:-1] if text.endswith(("Z", "z")) else text).date()
        except ValueError as exc:
            raise _Invalid("a date such as 2025-10-02") from exc
    raise _Invalid("a date such as 2025-10-02")


def format_iso(moment: datetime) -> str:
    """UTC ISO 8601 as the native API writes it: 2025-10-02T13:37:00Z. Four-digit years always:
    the C library's ``%Y`` wrote the year 1 as "1", which no ISO reader takes back."""
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S}Z"


def format_flat(moment: datetime) -> str:
    """The original's "YYYY-MM-DD HH:MM:SS" (UTC)."""
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}-{utc:%m-%d %H:%M:%S}"


def _number(raw: object) -> float | str:
    if isinstance(raw, bool):
        raise _Invalid("a number")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if QUALIFIED_NUMBER_RE.match(text):
            return text
        if "_" in text or not text.isascii():
            raise _Invalid(f"a number written with {_PLAIN_DIGITS}")
        try:
            value = float(text)
        except ValueError as exc:
            if _DECIMAL_COMMA.match(text):
                # "7,5" may be 7.5 or (as a thousands separator) 75: not guessed.
                raise _Invalid(
                    f"a number with a point for decimals ({text.replace(',', '.')}, not {text})"
                ) from exc
            raise _Invalid("a number (or a qualified number such as <321)") from exc
    else:
        raise _Invalid("a number")
    if not math.isfinite(value):
        raise _Invalid("a finite number")
    return value


def _integer(raw: object) -> int:
    value = _whole(raw)
    if not INTEGER_MIN <= value <= INTEGER_MAX:
        # Stored, it failed the write with a 500 (or the first filter or key lookup on it).
        raise _Invalid(f"a whole number from {INTEGER_MIN} to {INTEGER_MAX}")
    return value


def _whole(raw: object) -> int:
    if isinstance(raw, bool):
        raise _Invalid("a whole number")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        text = raw.strip()
        if "_" in text or not text.isascii():
            raise _Invalid(f"a whole number written with {_PLAIN_DIGITS}")
        try:
            return int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if math.isfinite(value) and value.is_integer():
                return int(value)
    raise _Invalid("a whole number")


def _boolean(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        text = raw.strip().casefold()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise _Invalid("true or false")


def _text(raw: object) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return str(raw)
    raise _Invalid("text")


def kept_as_stored(
    fields: Sequence[FieldDef], raw: Mapping[str, object], stored: Mapping[str, StoredValue]
) -> dict[str, object]:
    """``raw`` without the list values that name the deactivated option already stored: a result
    read and written back unchanged was refused ("'blocked' is deactivated") although nothing of
    it changed. Choosing a deactivated option anew is still refused."""
    by_name = {f.name: f for f in fields}
    kept = dict(raw)
    for name, value in raw.items():
        field = by_name.get(name)
        if field is None or field.type != "list" or stored.get(name) is None:
            continue
        try:
            option_id = _list_value(field, value, [], False, allow_inactive=True)
        except ValueError:
            continue
        option = field.option_by_id(option_id)
        if option is not None and not option.active and option_id == stored.get(name):
            del kept[name]
    return kept


def _list_value(
    field: FieldDef, raw: object, added: list[OptionDef], add_options: bool, allow_inactive: bool = False
) -> int:
    if isinstance(raw, bool):
        raise _Invalid(_expected_option(field))
    option: OptionDef | None = None
    if isinstance(raw, int):
        option = field.option_by_id(raw)
    elif isinstance(raw, float) and raw.is_integer():
        option = field.option_by_id(int(raw))
    elif isinstance(raw, str) and raw.strip():
        label = raw.strip()
        option = field.option_by_label(label) or next(
            (o for o in added if o.label.casefold() == label.casefold()), None
        )
        if option is None and label.isascii() and label.isdigit():
            option = field.option_by_id(int(label))
        if option is None and add_options:
            if len(label) > MAX_OPTION_LABEL:
                raise _Invalid(f"an option label of at most {MAX_OPTION_LABEL} characters to add")
            next_id = max((o.id for o in (*field.options, *added)), default=0) + 1
            option = OptionDef(next_id, label, True)
            added.append(option)
    if option is None:
        raise _Invalid(_expected_option(field))
    if not option.active and not allow_inactive:
        raise _Invalid(f"an active option; {option.label!r} is deactivated ({_expected_option(field)})")
    return option.id


def _expected_option(field: FieldDef) -> str:
    # Only when a value is refused: listing the options for every accepted value cost more than
    # finding the option (storeResults coerces thousands of list values per call).
    choices = ", ".join(repr(o.label) for o in field.options if o.active) or "none yet"
    return f"one of the options ({choices}) as label or id"


def coerce_value(
    field: FieldDef, raw: object, *, added: list[OptionDef] | None = None, add_options: bool = False
) -> StoredValue:
    """One incoming value to its stored form; None or "" means empty. Raises ValueError naming what fits."""
    if raw is None or (isinstance(raw, str) and not raw.strip() and field.type != "text"):
        return None
    if isinstance(raw, str) and raw == "":
        return None
    if field.type == "text":
        return _text(raw)
    if field.type == "number":
        return _number(raw)
    if field.type == "integer":
        return _integer(raw)
    if field.type == "boolean":
        return _boolean(raw)
    if field.type == "date":
        return parse_date(raw).isoformat()
    if field.type == "datetime":
        return format_iso(parse_datetime(raw))
    return _list_value(field, raw, added if added is not None else [], add_options)


@dataclass(frozen=True, slots=True)
class Coerced:
    """Incoming values in stored form, and list options to add (``add_list_options``), per field name."""

    values: dict[str, StoredValue]
    new_options: dict[str, tuple[OptionDef, ...]]


def coerce_values(
    fields: Sequence[FieldDef], raw: Mapping[str, object], *, path: str = "values", add_options: bool = False
) -> Coerced:
    """Coerce every incoming value; raise one ValidationFailed naming every bad field.

    Keys of the values map are field names; unknown or deactivated fields are refused.
    A None result means "clear this value".
    """
    return _coerce_all(fields, {f.name: f for f in fields}, None, raw, path, add_options)


class ValueCoercer:
    """``coerce_values`` for many inputs against the same fields (storeResults): the fields by
    name and the list options by exact label are indexed once instead of searched per value."""

    __slots__ = ("_by_name", "_fields", "_labels")

    def __init__(self, fields: Sequence[FieldDef]) -> None:
        self._fields = fields
        self._by_name = {f.name: f for f in fields}
        # The first option with a label wins, as in FieldDef.option_by_label.
        self._labels = {f.name: {o.label: o for o in reversed(f.options)} for f in fields if f.type == "list"}

    def coerce(
        self, raw: Mapping[str, object], *, path: str = "values", add_options: bool = False
    ) -> Coerced:
        return _coerce_all(self._fields, self._by_name, self._labels, raw, path, add_options)


def _coerce_all(
    fields: Sequence[FieldDef],
    by_name: Mapping[str, FieldDef],
    labels: Mapping[str, Mapping[str, OptionDef]] | None,
    raw: Mapping[str, object],
    path: str,
    add_options: bool,
) -> Coerced:
    errors: list[dict[str, str]] = []
    values: dict[str, StoredValue] = {}
    new_options: dict[str, tuple[OptionDef, ...]] = {}
    for name, raw_value in raw.items():
        field = by_name.get(name)
        if field is None:
            known = ", ".join(f.name for f in fields if f.active) or "none"
            _fail(errors, f"{path}.{name}", f"a field of this set; no such field (fields: {known})")
            continue
        if not field.active:
            _fail(errors, f"{path}.{name}", "an active field; this field is deactivated")
            continue
        if labels is not None and isinstance(raw_value, str) and field.type == "list":
            # An active option's exact label: what _list_value finds first; anything else goes there.
            option = labels[name].get(raw_value.strip())
            if option is not None and option.active:
                values[name] = option.id
                continue
        added: list[OptionDef] = []
        try:
            values[name] = coerce_value(field, raw_value, added=added, add_options=add_options)
        except ValueError as exc:
            _fail(errors, f"{path}.{name}", f"expected {exc}")
            continue
        if added:
            new_options[name] = tuple(added)
    raise_if_errors(errors)
    return Coerced(values, new_options)


def coerce_filter(
    fields: Sequence[FieldDef], raw: Mapping[str, object], *, path: str = "filter"
) -> dict[str, tuple[StoredValue, ...]]:
    """A filter {field: value or [values]} to stored values (any of them matches); null: no value.

    Deactivated fields and options may be filtered on: their data is kept and may be searched.
    """
    by_name = {f.name: f for f in fields}
    errors: list[dict[str, str]] = []
    wanted: dict[str, tuple[StoredValue, ...]] = {}
    for name, raw_value in raw.items():
        field = by_name.get(name)
        if field is None:
            known = ", ".join(f.name for f in fields if f.active) or "none"
            _fail(errors, f"{path}.{name}", f"a field of this set; no such field (fields: {known})")
            continue
        choices = raw_value if isinstance(raw_value, list) else [raw_value]
        stored: list[StoredValue] = []
        for choice in choices:
            try:
                if field.type == "list" and choice is not None and choice != "":
                    stored.append(_list_value(field, choice, [], False, allow_inactive=True))
                else:
                    stored.append(coerce_value(field, choice))
            except ValueError as exc:
                _fail(errors, f"{path}.{name}", f"expected {exc}")
                break
        wanted[name] = tuple(stored)
    raise_if_errors(errors, "Invalid filter")
    return wanted


def merge_values(
    old: Mapping[str, StoredValue], changes: Mapping[str, StoredValue]
) -> dict[str, StoredValue]:
    """Apply changes over the old values; None clears (the key disappears)."""
    merged: dict[str, StoredValue] = {k: v for k, v in old.items() if v is not None}
    for name, value in changes.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def missing_required(
    fields: Sequence[FieldDef], values: Mapping[str, StoredValue], *, path: str = "values"
) -> list[dict[str, str]]:
    """Details for every active required field without a value."""
    return [
        {"field": f"{path}.{f.name}", "error": "a value; this field is required"}
        for f in fields
        if f.active and f.required and values.get(f.name) is None
    ]


def check_required(
    fields: Sequence[FieldDef], values: Mapping[str, StoredValue], *, path: str = "values"
) -> None:
    raise_if_errors(missing_required(fields, values, path=path), "Missing required field")


# --- presentation ------------------------------------------------------------------------------


def _ordered(fields: Iterable[FieldDef]) -> list[FieldDef]:
    return sorted(fields, key=lambda f: (f.position, f.id))


def present_value(field: FieldDef, stored: object, *, flat: bool = False) -> Any:
    """A stored value as people and receivers see it: list as label; flat datetimes as "Y-m-d H:M:S"."""
    if stored is None:
        return None
    if field.type == "list" and isinstance(stored, int) and not isinstance(stored, bool):
        option = field.option_by_id(stored)
        return option.label if option is not None else stored
    if flat and field.type == "datetime" and isinstance(stored, str):
        try:
            return format_flat(parse_datetime(stored))
        except ValueError:
            return stored
    return stored


def flat_result(
    result_id: int, date: datetime, values: Mapping[str, object], fields: Sequence[FieldDef]
) -> dict[str, Any]:
    """The flat presented result, as the original's getResults returns it and webhooks carry it."""
    flat: dict[str, Any] = {"@id": result_id, "date": format_flat(date)}
    for field in _ordered(fields):
        if field.active:
            flat[field.name] = present_value(field, values.get(field.name), flat=True)
    return flat


class FlatView:
    """``flat_result`` for many results of one set: fields ordered and option labels looked up once."""

    __slots__ = ("_columns",)

    def __init__(self, fields: Sequence[FieldDef]) -> None:
        self._columns = [
            (f.name, f, {o.id: o.label for o in reversed(f.options)} if f.type == "list" else None)
            for f in _ordered(fields)
            if f.active
        ]

    def flat(self, result_id: int, date: datetime, values: Mapping[str, object]) -> dict[str, Any]:
        flat: dict[str, Any] = {"@id": result_id, "date": format_flat(date)}
        for name, field, labels in self._columns:
            stored = values.get(name)
            if stored is None:
                flat[name] = None
            elif labels is not None:
                if isinstance(stored, int) and not isinstance(stored, bool):
                    flat[name] = labels.get(stored, stored)
                else:
                    flat[name] = stored
            elif field.type == "datetime":
                flat[name] = present_value(field, stored, flat=True)
            else:
                flat[name] = stored
        return flat


def native_values(values: Mapping[str, object], fields: Sequence[FieldDef]) -> dict[str, Any]:
    """Native ``values``: every active field (null when empty), plus kept values of inactive ones."""
    out: dict[str, Any] = {}
    for field in _ordered(fields):
        if field.active or values.get(field.name) is not None:
            out[field.name] = present_value(field, values.get(field.name))
    return out


def changes_between(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """{"field": {"old", "new"}} for each presented key (including "date") whose value differs.

    Text that differs only in its Unicode form (``composed``) is no change: a save of "Müller"
    pasted with a combining diaeresis over "Müller" typed with one code point fired every
    modification workflow with an old and a new value that read the same."""
    if before is None and after is not None:
        # A new result: every value it has is a change (the general case gives the same).
        return {k: {"old": None, "new": v} for k, v in after.items() if k != "@id" and v is not None}
    old = before or {}
    new = after or {}
    keys = [k for k in (*old.keys(), *(k for k in new if k not in old)) if k != "@id"]
    return {k: {"old": old.get(k), "new": new.get(k)} for k in keys if _differs(old.get(k), new.get(k))}


def composed(text: str) -> str:
    """Text in Unicode's composed form (NFC), as filters and change detection compare it: "Müller"
    typed on one system (one code point for ü) did not equal "Müller" pasted from another (u and a
    combining diaeresis), though they read the same. Stored values keep the form they came in."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def same_values(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Stored values that say the same (text compared in its composed form): saving them over
    each other is no change, so no new version and no event."""
    return old.keys() == new.keys() and not any(_differs(old[k], new[k]) for k in old)


def _differs(old: Any, new: Any) -> bool:
    if isinstance(old, str) and isinstance(new, str):
        return composed(old) != composed(new)
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return any(_differs(a, b) for a, b in zip(old, new, strict=True))
    return bool(old != new)


def with_options(
    fields: Sequence[FieldDef], new_options: Mapping[str, Sequence[OptionDef]]
) -> tuple[FieldDef, ...]:
    """The fields after ``add_list_options`` appended the given options."""
    return tuple(
        replace(f, options=(*f.options, *new_options[f.name])) if f.name in new_options else f for f in fields
    )


def field_by_name(fields: Sequence[FieldDef], name: str) -> FieldDef | None:
    return next((f for f in fields if f.name == name), None)
