"""Parameters of the AlisQI-compatible API, pure: parsing, filter matching, sorting, presenting.

Everything here takes strings as the original's clients send them (query string or form body) and
the set's ``FieldDef``s, and either returns plain values or raises ``BadRequest`` with the
original's message style: ``Invalid parameter: sort field 'batchnr'. No such field in set.``
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from typing import Any
from urllib.parse import parse_qsl

from qhook.domain import json_text
from qhook.domain.fields import FieldDef, coerce_value, format_flat, parse_datetime
from qhook.domain.ids import MAX_ID
from qhook.errors import BadRequest

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 100
SYSTEM_SORT_KEYS = ("date", "@id")
MAX_SORT_PARTS = 10_000  # repeats included: the work a sort parameter may ask for
MAX_SORT_KEYS = 100  # each becomes ORDER BY terms; SQLite refuses more than 2,000 (it was a 503)
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


@dataclass(frozen=True, slots=True)
class SortKey:
    field: str  # "date", "@id" or a user field name
    descending: bool


@dataclass(frozen=True, slots=True)
class Condition:
    """One filter entry: a result matches when its stored value equals any of ``accepted``.

    Conditions on different fields are AND-ed; ``None`` in ``accepted`` matches an empty value.
    """

    field: str
    accepted: tuple[Any, ...]


def bad_parameter(name: str, problem: str) -> BadRequest:
    return BadRequest(f"Invalid parameter: {name}. {problem}")


# --- text in ---------------------------------------------------------------------------------------

_RAW_BYTE = re.compile(rb"[\x80-\xff]")


def charset_of(content_type: str, default: str = "utf-8") -> str:
    """The codec a Content-Type's ``charset`` names (the default when it names none)."""
    message = Message()
    message["content-type"] = content_type
    charset = message.get_content_charset() or default
    try:
        name = codecs.lookup(charset).name
        b"\0\0\0\0".decode(name)  # base64, rot13, zlib... are codecs, no text encodings: LookupError
    except (LookupError, UnicodeError) as exc:
        raise bad_parameter("Content-Type", f"Expected a known text charset, not {charset!r}.") from exc
    return name


def decoded(data: bytes, charset: str, name: str) -> str:
    """``data`` as text in ``charset``; a 400 naming ``name`` rather than text with U+FFFD in it."""
    try:
        return data.decode(charset)
    except UnicodeError as exc:
        raise _not_text(name, charset) from exc


def form_fields(body: bytes, charset: str, name: str = "body") -> list[tuple[str, str]]:
    """An urlencoded form in ``charset``: ``%F6`` in ISO-8859-1 is "ö", not U+FFFD (the form
    parser read every escape as UTF-8). Raw bytes outside ASCII are read as escapes would be."""
    ascii_body = _RAW_BYTE.sub(lambda match: b"%%%02X" % match.group()[0], body).decode("ascii")
    try:
        return parse_qsl(ascii_body, keep_blank_values=True, encoding=charset, errors="strict")
    except UnicodeError as exc:
        raise _not_text(name, charset) from exc


def _not_text(name: str, charset: str) -> BadRequest:
    if name == "query string":
        return bad_parameter(name, "Expected UTF-8 text, percent-encoded.")
    return bad_parameter(name, f"Expected text in {charset} (or the charset named in its Content-Type).")


def missing_parameter(name: str) -> BadRequest:
    return BadRequest(f"Missing parameter: {name}")


# --- scalars ---------------------------------------------------------------------------------------


def parse_bool(raw: str | None, name: str, default: bool = False) -> bool:
    if raw is None:
        return default
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise bad_parameter(name, f"Expected true or false, got {raw!r}.")


def parse_int(
    raw: str | None, name: str, *, default: int | None = None, minimum: int = 0, maximum: int | None = None
) -> int:
    if raw is None or raw.strip() == "":
        if default is None:
            raise missing_parameter(name)
        return default
    text = raw.strip()
    if not (text.isascii() and text.lstrip("-").isdigit()):
        raise bad_parameter(name, f"Expected a whole number, got {raw!r}.")
    value = int(text)
    upper = MAX_ID if maximum is None else maximum  # set and result ids, offsets: INTEGER on PostgreSQL
    if value < minimum or value > upper:
        raise bad_parameter(name, f"Expected a number between {minimum} and {upper}, got {value}.")
    return value


def split_list(raw: str | None) -> list[str]:
    """A list parameter as a JSON array or comma-separated text; empty parts dropped."""
    if raw is None or not raw.strip():
        return []
    text = raw.strip()
    if text.startswith("["):
        try:
            items = json_text.loads(text)
        except ValueError:
            items = None
        if isinstance(items, list):
            return [str(item).strip() for item in items if str(item).strip()]
    return [part.strip() for part in text.split(",") if part.strip()]


def compat_datetime(moment: datetime) -> str:
    """The original's way of writing a moment: ``YYYY-MM-DD HH:MM:SS`` in UTC."""
    return format_flat(moment)


def parse_result_date(raw: Any) -> datetime:
    """A result ``date`` as clients send it: ``YYYY-MM-DD HH:MM:SS`` (UTC), ISO 8601, or a day."""
    try:
        return parse_datetime(raw)
    except ValueError as exc:
        raise BadRequest(f"date: expected 'YYYY-MM-DD HH:MM:SS', got {raw!r}") from exc


# --- fields=, sort=, filter= ------------------------------------------------------------------------


def _by_name(fields: Sequence[FieldDef]) -> dict[str, FieldDef]:
    return {field.name: field for field in fields}


def parse_fields(raw: str | None, fields: Sequence[FieldDef]) -> tuple[str, ...] | None:
    """``fields=a_,b_``: which user fields to return (``date`` always comes); None for all."""
    names = split_list(raw)
    if not names:
        return None
    known = _by_name(fields)
    for name in names:
        if name not in known and name not in SYSTEM_SORT_KEYS:
            raise bad_parameter(f"fields field '{name}'", "No such field in set.")
        if name in known and not known[name].active:
            # getResults shows active fields only: the name was dropped without a word.
            raise bad_parameter(f"fields field '{name}'", "This field is deactivated.")
    return tuple(name for name in names if name in known)


def parse_sort(raw: str | None, fields: Sequence[FieldDef]) -> tuple[SortKey, ...]:
    """``sort=date:desc`` or ``sort=batchnumber_:asc,date:desc``; the default is newest first."""
    if raw is None or not raw.strip():
        return (SortKey("date", True),)
    known = _by_name(fields)
    keys: dict[str, SortKey] = {}
    parts = [part for part in split_list(raw) if part.strip()]
    if not parts:  # "," named no key: the default, not the table's order
        return (SortKey("date", True),)
    if len(parts) > MAX_SORT_PARTS:
        raise bad_parameter("sort", f"Expected at most {MAX_SORT_PARTS} sort parts, repeats included.")
    for part in parts:
        name, _, direction = part.partition(":")
        name = name.strip()
        if name == "id" and name not in known:  # the original's alias, unless a field has the name
            name = "@id"
        if name not in known and name not in SYSTEM_SORT_KEYS:
            raise bad_parameter(f"sort field '{name}'", "No such field in set.")
        direction = direction.strip().lower() or "asc"
        if direction not in ("asc", "desc"):
            raise bad_parameter(f"sort direction '{direction}'", "Expected asc or desc.")
        key = SortKey(name, direction == "desc")
        if keys.get(name, key) != key:
            raise bad_parameter(
                f"sort field '{name}'", "Expected one direction for each field (asc or desc)."
            )
        keys[name] = key  # a repeated key adds nothing
    if len(keys) > MAX_SORT_KEYS:
        raise bad_parameter("sort", f"Expected at most {MAX_SORT_KEYS} sort fields.")
    return tuple(keys.values())


def parse_filter(raw: str | None, fields: Sequence[FieldDef]) -> tuple[Condition, ...]:
    """``filter`` as JSON in either form the original accepts.

    Full form: ``{"status_": [{"value": 3}, {"value": "draft"}]}``; shorthand:
    ``{"status_": "released"}`` (or a plain list of values). List values may be an option id or
    its label. Values are turned into their stored form here so matching is a plain comparison.
    """
    if raw is None or not raw.strip():
        return ()
    try:
        parsed = json_text.loads(raw)
    except ValueError as exc:
        refusal = json_text.refused(getattr(exc, "msg", ""))
        if refusal is not None:
            raise bad_parameter(f"filter field '{refusal[0]}'", f"Expected {refusal[1]}.") from exc
        raise bad_parameter("filter", 'Expected a JSON object such as {"status_": "released"}.') from exc
    if not isinstance(parsed, dict):
        raise bad_parameter("filter", 'Expected a JSON object such as {"status_": "released"}.')
    known = _by_name(fields)
    conditions: list[Condition] = []
    for name, spec in parsed.items():
        if name not in known:
            raise bad_parameter(f"filter field '{name}'", "No such field in set.")
        accepted = tuple(_stored_form(known[name], value) for value in _filter_values(name, spec))
        conditions.append(Condition(name, accepted))
    return tuple(conditions)


def _filter_values(name: str, spec: Any) -> list[Any]:
    items = spec if isinstance(spec, list) else [spec]
    values: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            if "value" not in item:
                raise bad_parameter(f"filter field '{name}'", 'Expected {"value": ...} entries.')
            others = sorted(str(key) for key in item if key != "value")
            if others:
                # {"value": 5, "operator": ">"} filtered on equality: wrong rows, no word said.
                raise bad_parameter(
                    f"filter field '{name}' key '{others[0]}'",
                    'Expected {"value": ...} entries only: filters match values exactly (no operators).',
                )
            values.append(item["value"])
        else:
            values.append(item)
    if not values:
        raise bad_parameter(f"filter field '{name}'", "Expected at least one value.")
    return values


def _stored_form(field: FieldDef, value: Any) -> Any:
    """The value as results.values stores it, so a filter compares like with like."""
    if value is None or value == "":
        return None
    where = f"filter value {value!r} for field '{field.name}'"
    if field.type == "list":
        # Deactivated options still match: old results keep them. Read as storeResults reads a
        # value: a JSON number is an id, text a label first, then an id. With options "3", "2",
        # "1" the id was tried first and grade "1" found the results of grade "3".
        text = str(value).strip()
        by_label = [o for o in field.options if text.casefold() == o.label.casefold()]
        by_id = [o for o in field.options if text == str(o.id)]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        for option in (by_id or by_label) if number else (by_label or by_id):
            return option.id
        raise bad_parameter(where, "No such option.")
    try:
        return coerce_value(field, value)
    except ValueError as exc:
        raise bad_parameter(where, f"Expected {exc}.") from exc


def as_store_filters(conditions: Iterable[Condition]) -> dict[str, list[Any]]:
    """Conditions as the results store filters them: field -> any of these stored values."""
    return {condition.field: list(condition.accepted) for condition in conditions}


def as_store_sort(keys: Iterable[SortKey]) -> list[tuple[str, bool]]:
    """Sort keys as the results store orders them (``@id`` is its ``id``)."""
    return [("id" if key.field == "@id" else key.field, key.descending) for key in keys]


# --- presenting -----------------------------------------------------------------------------------


def present(
    flat: Mapping[str, Any],
    *,
    include_id: bool,
    only_fields: tuple[str, ...] | None,
    last_modified: datetime | None = None,
) -> dict[str, Any]:
    """A flat result as getResults returns it: ``@id`` on request, ``date``, then the user fields."""
    shown: dict[str, Any] = {}
    if include_id:
        shown["@id"] = flat.get("@id")
    shown["date"] = flat.get("date")
    for name, value in flat.items():
        if name in ("@id", "date"):
            continue
        if only_fields is None or name in only_fields:
            shown[name] = value
    if last_modified is not None:
        shown["lastModificationDate"] = compat_datetime(last_modified)
    return shown


def parse_results_param(raw: str | None) -> list[dict[str, Any]]:
    """``results``: a JSON string holding an array of result objects, or one object."""
    if raw is None or not raw.strip():
        raise missing_parameter("results")
    try:
        parsed = json_text.loads(raw)
    except ValueError as exc:
        refusal = json_text.refused(getattr(exc, "msg", ""))
        if refusal is not None:
            raise bad_parameter(f"results.{refusal[0]}", f"Expected {refusal[1]}.") from exc
        raise bad_parameter("results", f"Expected JSON (an array of result objects): {exc}.") from exc
    items = [parsed] if isinstance(parsed, dict) else parsed
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise bad_parameter("results", "Expected a JSON array of result objects, or one object.")
    if not items:
        raise bad_parameter("results", "Expected at least one result.")
    return items
