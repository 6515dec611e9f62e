"""Workflow filters: a JSON condition tree, validated against a set's fields, evaluated purely.

A filter is ``{"all": [...]}``, ``{"any": [...]}``, ``{"not": {...}}`` or a leaf
``{"field": "status_", "op": "eq", "value": "released"}``. Leaves compare the *flat presented
result* (list fields as their label, dates as text) and may ask whether a field ``changed`` in the
event. Evaluation never raises. A comparison the result's value cannot settle ("<0.5" lt 0.3,
junk in a date field) is *unknown*: ``all`` and ``any`` combine unknowns as SQL does with NULL
(so the order of conditions never matters), ``not`` keeps it unknown, and a filter that ends
unknown is "not met", the reason saying why. A qualified number settles what its bound allows:
"<0.5" is lt 1 and not gt 0.5.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

from qhook.domain.fields import QUALIFIED_NUMBER_RE, composed, format_iso, parse_date, parse_datetime
from qhook.errors import ValidationFailed


class FieldLike(Protocol):
    """What filters need of a field definition (``qhook.domain.fields.FieldDef`` fits)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def options(self) -> Sequence[Any]: ...


OPS = (
    "eq ne lt lte gt gte in not_in contains not_contains starts_with ends_with empty not_empty changed"
).split()
_NO_VALUE = {"empty", "not_empty", "changed"}
_EQUALITY = frozenset({"eq", "ne", "in", "not_in"})
_ORDER = {"lt", "lte", "gt", "gte"}
_TEXTUAL = {"contains", "not_contains", "starts_with", "ends_with"}
_LISTED = {"in", "not_in"}
_BASIC = {"eq", "ne", "in", "not_in", "empty", "not_empty", "changed"}

# Which operators fit which field type; the result's own "date" is a datetime and "@id" an integer.
OPS_BY_TYPE: dict[str, frozenset[str]] = {
    "text": frozenset(_BASIC | _TEXTUAL),
    "list": frozenset(_BASIC | _TEXTUAL),
    "number": frozenset(_BASIC | _ORDER),
    "integer": frozenset(_BASIC | _ORDER),
    "date": frozenset(_BASIC | _ORDER),
    "datetime": frozenset(_BASIC | _ORDER),
    "boolean": frozenset({"eq", "ne", "empty", "not_empty", "changed"}),
}
SYSTEM_FIELDS = {"date": "datetime", "@id": "integer"}


class FilterRuntimeError(Exception):
    """A value in the result that the filter cannot compare (e.g. a qualified number ``<321``)."""


@dataclass(frozen=True, slots=True)
class Leaf:
    field: str
    op: str
    value: Any
    type: str


@dataclass(frozen=True, slots=True)
class AllOf:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class NotOf:
    item: Node


Node = Leaf | AllOf | AnyOf | NotOf


def deactivated_expected(name: str) -> str:
    """What a filter or trigger naming a deactivated field is told (at save, and on each event)."""
    return f"an active field; {name} is deactivated"


def _fail(path: str, expected: str) -> ValidationFailed:
    return ValidationFailed(f"{path}: {expected}", details=[{"field": path, "error": expected}])


def parse_filter(
    raw: Any, fields: Sequence[FieldLike], path: str = "filter", *, inactive: Collection[str] = ()
) -> Node | None:
    """Validate ``raw`` against the set's (active) ``fields``; None (or {}) means every result
    passes. A leaf naming one of the ``inactive`` (deactivated) fields is refused as such."""
    if raw is None or raw == {}:
        return None
    by_name = {f.name: f for f in fields}
    return _parse(raw, by_name, path, inactive)


def _parse(raw: Any, fields: Mapping[str, FieldLike], path: str, inactive: Collection[str]) -> Node:
    if not isinstance(raw, dict):
        raise _fail(path, "an object with 'all', 'any', 'not' or 'field'/'op'")
    if "field" in raw or "op" in raw:
        return _parse_leaf(raw, fields, path, inactive)
    if len(raw) != 1:
        raise _fail(path, "exactly one of 'all', 'any', 'not', or a leaf with 'field' and 'op'")
    key, inner = next(iter(raw.items()))
    if key in ("all", "any"):
        if not isinstance(inner, list) or not inner:
            raise _fail(f"{path}.{key}", "a non-empty list of conditions")
        items = tuple(_parse(item, fields, f"{path}.{key}[{i}]", inactive) for i, item in enumerate(inner))
        return AllOf(items) if key == "all" else AnyOf(items)
    if key == "not":
        return NotOf(_parse(inner, fields, f"{path}.not", inactive))
    raise _fail(f"{path}.{key}", "one of 'all', 'any', 'not', or a leaf with 'field' and 'op'")


def _parse_leaf(
    raw: dict[str, Any], fields: Mapping[str, FieldLike], path: str, inactive: Collection[str]
) -> Leaf:
    extra = set(raw) - {"field", "op", "value"}
    if extra:
        raise _fail(f"{path}.{sorted(extra)[0]}", "only 'field', 'op' and 'value' in a leaf")
    name = raw.get("field")
    if not isinstance(name, str):
        raise _fail(f"{path}.field", "a field name")
    if name in SYSTEM_FIELDS:
        field_type = SYSTEM_FIELDS[name]
        options: Sequence[Any] = ()
    elif name in fields:
        field_type = fields[name].type
        options = fields[name].options
    elif name in inactive:
        raise _fail(f"{path}.field", deactivated_expected(name))
    else:
        known = ", ".join(sorted(fields)) or "none"
        raise _fail(f"{path}.field", f"a field of the set ({known}), got {name!r}")
    op = raw.get("op")
    if op not in OPS:
        raise _fail(f"{path}.op", f"one of {', '.join(OPS)}, got {op!r}")
    if op not in OPS_BY_TYPE.get(field_type, frozenset()):
        allowed = ", ".join(o for o in OPS if o in OPS_BY_TYPE.get(field_type, frozenset()))
        raise _fail(f"{path}.op", f"an operator for a {field_type} field ({allowed}), got {op!r}")
    if op in _NO_VALUE:
        if raw.get("value") is not None:
            raise _fail(f"{path}.value", f"no value for {op!r}")
        return Leaf(name, op, None, field_type)
    if "value" not in raw:
        raise _fail(f"{path}.value", f"a value for {op!r}")
    value = raw["value"]
    if op in _LISTED:
        if not isinstance(value, list) or not value:
            raise _fail(f"{path}.value", f"a non-empty list of {field_type} values for {op!r}")
        checked = tuple(
            _check_value(v, field_type, options, f"{path}.value[{i}]") for i, v in enumerate(value)
        )
        return Leaf(name, op, checked, field_type)
    if op in _TEXTUAL:
        if not isinstance(value, str):
            raise _fail(f"{path}.value", f"a text value for {op!r}")
        return Leaf(name, op, composed(value), field_type)
    return Leaf(name, op, _check_value(value, field_type, options, f"{path}.value"), field_type)


def _check_value(value: Any, field_type: str, options: Sequence[Any], path: str) -> Any:
    """The filter's own value, checked and normalised to what the presented result holds."""
    if field_type == "text":
        if not isinstance(value, str):
            raise _fail(path, "a text value")
        return composed(value)
    if field_type == "list":
        labels = {getattr(o, "label", None): o for o in options}
        ids = {getattr(o, "id", None): o for o in options}
        if isinstance(value, str) and value in labels:
            return composed(value)
        if isinstance(value, int) and not isinstance(value, bool) and value in ids:
            return composed(str(ids[value].label))
        known = ", ".join(repr(label) for label in labels if label is not None)
        raise _fail(path, f"an option label or id of the list ({known}), got {value!r}")
    if field_type == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(path, "a number")
        try:
            return float(value)
        except OverflowError as exc:  # an integer such as 10**400 has no float
            raise _fail(path, "a number between -1.8e308 and 1.8e308") from exc
    if field_type == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, "an integer")
        return value
    if field_type == "boolean":
        if not isinstance(value, bool):
            raise _fail(path, "true or false")
        return value
    if field_type == "date":
        try:
            # Read as a stored value is: a date and time counts by its date as written (in UTC
            # "2026-06-01T23:30:00-05:00" is already 2 June); "2026-12-01xyz" is refused.
            return parse_date(value)
        except (TypeError, ValueError) as exc:
            raise _fail(path, "a date 'YYYY-MM-DD'") from exc
    if field_type == "datetime":
        try:
            # To the second, as stored values are: "lt 07:00:00.5" met 07:00:00.9 (stored as
            # 07:00:00) and "eq 07:00:00.4" could never be met, each explained with whole seconds.
            return parse_datetime(value)
        except (TypeError, ValueError) as exc:
            raise _fail(path, "a date-time, e.g. '2025-10-02T13:37:00Z'") from exc
    raise _fail(path, f"a field type qhook knows, not {field_type!r}")


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise TypeError("not a date")
    return date.fromisoformat(value.strip()[:10])


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip().replace(" ", "T", 1)
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    else:
        raise TypeError("not a date-time")
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00:00+05:00 is in the year 0 in UTC
        raise ValueError("outside the years 1 to 9999 in UTC") from exc


def _actual(value: Any, leaf: Leaf) -> Any:
    """The result's presented value in the leaf's terms; FilterRuntimeError when it cannot be."""
    if value is None or value == "":
        return None
    try:
        if leaf.type == "number":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if leaf.type == "integer":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if leaf.type == "boolean":
            if isinstance(value, bool):
                return value
            if str(value).strip().lower() in ("1", "true", "yes"):
                return True
            if str(value).strip().lower() in ("0", "false", "no"):
                return False
            raise ValueError
        if leaf.type == "date":
            return _as_date(value)
        if leaf.type == "datetime":
            return _as_datetime(value)
    except (TypeError, ValueError) as exc:
        raise FilterRuntimeError(f"{leaf.field} is {value!r}, not a plain {leaf.type}") from exc
    return composed(str(value))


def _show(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, datetime):
        return repr(format_iso(value))
    if isinstance(value, date):
        return repr(value.isoformat())
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


Met = bool | None  # None: unknown, the value cannot settle it


def _bound(raw: Any) -> tuple[str, float] | None:
    """A qualified number's bound: "<0.5" -> ("<", 0.5); None for "~5" or anything else."""
    text = str(raw).strip().replace("≤", "<=").replace("≥", ">=")
    if not QUALIFIED_NUMBER_RE.match(text) or text.startswith("~"):
        return None
    qualifier = text[:2] if text[:2] in ("<=", ">=") else text[0]
    try:
        return qualifier, float(text[len(qualifier) :].strip().replace(",", "."))
    except ValueError:
        return None


def _bounded(qualifier: str, bound: float, op: str, expected: float) -> Met:
    """What ``value op expected`` is for every value the bound allows (None: it depends)."""
    strict = qualifier in ("<", ">")
    if qualifier in ("<", "<="):  # value below the bound
        at_or_below = bound < expected or (bound == expected and strict)  # value < expected for sure
        if op == "lt":
            return True if at_or_below else None
        if op == "lte":
            return True if bound <= expected else None
        if op == "gt":
            return False if bound <= expected else None
        return False if at_or_below else None  # gte
    at_or_above = bound > expected or (bound == expected and strict)  # value > expected for sure
    if op == "gt":
        return True if at_or_above else None
    if op == "gte":
        return True if bound >= expected else None
    if op == "lt":
        return False if bound >= expected else None
    return False if at_or_above else None  # lte


def _leaf(leaf: Leaf, result: Mapping[str, Any], changes: Mapping[str, Any]) -> tuple[Met, str]:
    if leaf.op == "changed":
        met = leaf.field in changes
        return met, f"{leaf.field} {'changed' if met else 'did not change'}, expected changed"
    raw = result.get(leaf.field)
    op, expected = leaf.op, leaf.value
    if op in ("empty", "not_empty"):
        # Filled in is filled in, whatever it holds: a qualified number such as "<0.5" too.
        met = (raw is None or raw == "") == (op == "empty")
        return met, f"{leaf.field} is {_show(None if raw == '' else raw)}, expected {op}"
    try:
        actual = _actual(raw, leaf)
    except FilterRuntimeError:
        want = f"expected {op} {_show(expected)}"
        if op in _EQUALITY:
            # A value that is not a plain one ("<0.5" in a number field) equals none of the plain
            # values a filter holds: eq and in are not met, ne and not_in are.
            met = op in ("ne", "not_in")
            return met, f"{leaf.field} is {_show(raw)}, not a plain {leaf.type}, {want}"
        bound = _bound(raw) if leaf.type in ("number", "integer") else None
        settled = _bounded(*bound, op, float(expected)) if bound is not None else None
        if settled is None:
            return None, f"{leaf.field} is {_show(raw)}, which cannot say whether {op} {_show(expected)}"
        return settled, f"{leaf.field} is {_show(raw)}, {want}"
    if op == "eq":
        met = actual == expected
    elif op == "ne":
        met = actual != expected
    elif op == "in":
        met = actual in expected
    elif op == "not_in":
        met = actual not in expected
    elif op in _TEXTUAL:
        text = "" if actual is None else str(actual)
        if op == "contains":
            met = expected in text
        elif op == "not_contains":
            met = expected not in text
        elif op == "starts_with":
            met = actual is not None and text.startswith(expected)
        else:
            met = actual is not None and text.endswith(expected)
    else:  # ordering: an empty value is never less or greater than anything
        if actual is None:
            met = False
        elif op == "lt":
            met = actual < expected
        elif op == "lte":
            met = actual <= expected
        elif op == "gt":
            met = actual > expected
        else:
            met = actual >= expected
    shown = f"{leaf.field} is {_show(raw if actual is None or leaf.type in ('text', 'list') else actual)}"
    want = f"expected {op}" if op in _NO_VALUE else f"expected {op} {_show(expected)}"
    return met, f"{shown}, {want}"


def _eval(node: Node, result: Mapping[str, Any], changes: Mapping[str, Any]) -> tuple[Met, str]:
    if isinstance(node, Leaf):
        return _leaf(node, result, changes)
    if isinstance(node, AllOf):
        unknown: str | None = None
        reasons = []
        for item in node.items:
            met, why = _eval(item, result, changes)
            if met is False:
                return False, why
            if met is None and unknown is None:
                unknown = why
            reasons.append(why)
        # Each condition's field and value: "not (all conditions met)" named neither.
        return (None, unknown) if unknown is not None else (True, "all of: " + _listed(reasons))
    if isinstance(node, AnyOf):
        reasons = []
        undecided = False
        for item in node.items:
            met, why = _eval(item, result, changes)
            if met is True:
                return True, why
            undecided = undecided or met is None
            reasons.append(why)
        return (None if undecided else False), "none of: " + "; ".join(reasons)
    met, why = _eval(node.item, result, changes)
    return (None if met is None else not met), f"not ({why})"


REASONS_SHOWN = 400  # characters of an "all of" list kept on every event's evaluation


def _listed(reasons: list[str]) -> str:
    """The reasons joined, the first few hundred characters' worth (a long ``in`` list each)."""
    shown: list[str] = []
    size = 0
    for reason in reasons:
        if shown and size + len(reason) > REASONS_SHOWN:
            return "; ".join(shown) + f"; and {len(reasons) - len(shown)} more met"
        shown.append(reason)
        size += len(reason) + 2
    return "; ".join(shown)


def evaluate(
    node: Node | None, result: Mapping[str, Any] | None, changes: Mapping[str, Any] | None = None
) -> tuple[bool, str]:
    """(met, reason) for the flat presented result and the event's changes; never raises."""
    if node is None:
        return True, "no filter"
    try:
        met, why = _eval(node, result or {}, changes or {})
    except Exception as exc:  # a filter must never crash the change it evaluates
        return False, f"filter not met: error: {type(exc).__name__}: {exc}"
    return (True, f"filter met: {why}") if met is True else (False, f"filter not met: {why}")


def never_met(node: Node | None) -> str | None:
    """Why a filter can never be met, found among the conditions that must all hold (a leaf, or
    ``all`` of them, nested ``all`` included: ``any`` and ``not`` are not looked into); None when
    no such contradiction is found. For the preview and the workflow's page: such a filter was
    saved without a word and the workflow never fired."""
    by_field: dict[str, list[Leaf]] = {}
    for leaf in _must_hold(node):
        if _equals_only_empty_text(leaf):
            # "" counts as empty, and an empty field equals no value: the author meant ``empty``.
            return f"{leaf.field}: {_said(leaf)} is never met (an empty field equals no value; use empty)"
        by_field.setdefault(leaf.field, []).append(leaf)
    for name, leaves in by_field.items():
        why = _contradiction(leaves)
        if why is not None:
            return f"{name}: {why}"
    return None


def _equals_only_empty_text(leaf: Leaf) -> bool:
    return (leaf.op == "eq" and leaf.value == "") or (
        leaf.op == "in" and bool(leaf.value) and all(v == "" for v in leaf.value)
    )


def _must_hold(node: Node | None) -> list[Leaf]:
    if isinstance(node, Leaf):
        return [node]
    if isinstance(node, AllOf):
        return [leaf for item in node.items for leaf in _must_hold(item)]
    return []


# What an empty field meets besides ``empty`` itself: it equals and orders with nothing.
_EMPTY_MEETS = frozenset({"empty", "ne", "not_in", "not_contains", "changed"})


def _said(leaf: Leaf) -> str:
    if leaf.op in _NO_VALUE:
        return leaf.op
    if leaf.op in _LISTED:
        return f"{leaf.op} [{', '.join(_show(v) for v in leaf.value)}]"
    return f"{leaf.op} {_show(leaf.value)}"


def _contradiction(leaves: list[Leaf]) -> str | None:
    """Two conditions on one field that cannot both hold, as "<a> and <b> cannot both hold"."""
    pair = _clash(leaves)
    return None if pair is None else f"{_said(pair[0])} and {_said(pair[1])} cannot both hold"


def _clash(leaves: list[Leaf]) -> tuple[Leaf, Leaf] | None:
    # ``contains ""`` holds for any text, an empty field's "" included.
    filled = [
        leaf for leaf in leaves if leaf.op not in _EMPTY_MEETS and (leaf.op, leaf.value) != ("contains", "")
    ]
    empty = next((leaf for leaf in leaves if leaf.op == "empty"), None)
    if empty is not None and filled:
        return empty, filled[0]
    # The values eq and in leave (None: any), and the leaf that first narrowed them.
    allowed: set[Any] | None = None
    narrowed: Leaf | None = None
    for leaf in leaves:
        if leaf.op in ("eq", "in"):
            values = {leaf.value} if leaf.op == "eq" else set(leaf.value)
            if allowed is not None and narrowed is not None and not allowed & values:
                return narrowed, leaf
            allowed = values if allowed is None else allowed & values
            narrowed = narrowed or leaf
    lows = [leaf for leaf in leaves if leaf.op in ("gt", "gte")]
    highs = [leaf for leaf in leaves if leaf.op in ("lt", "lte")]
    for low in lows:
        for high in highs:
            strict = low.op == "gt" or high.op == "lt"
            if low.value > high.value or (low.value == high.value and strict):
                return low, high
    if allowed is None or narrowed is None:
        return None
    for leaf in leaves:
        if leaf.op in ("ne", "not_in"):
            refused = {leaf.value} if leaf.op == "ne" else set(leaf.value)
            if allowed <= refused:
                return narrowed, leaf
        elif leaf.op in ("gt", "gte", "lt", "lte") and not any(_in_order(v, leaf) for v in allowed):
            return narrowed, leaf
    return None


def _in_order(value: Any, leaf: Leaf) -> bool:
    if leaf.op == "gt":
        return bool(value > leaf.value)
    if leaf.op == "gte":
        return bool(value >= leaf.value)
    if leaf.op == "lt":
        return bool(value < leaf.value)
    return bool(value <= leaf.value)


def inputs(node: Node | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(fields whose values, fields whose being changed) ``evaluate`` reads, in a fixed order:
    equal inputs give an equal answer, so a batch can key a memo of answers by them."""
    values: list[str] = []
    changed: list[str] = []
    stack: list[Node] = [node] if node is not None else []
    while stack:
        item = stack.pop()
        if isinstance(item, Leaf):
            target = changed if item.op == "changed" else values
            if item.field not in target:
                target.append(item.field)
        elif isinstance(item, AllOf | AnyOf):
            stack.extend(item.items)
        else:
            stack.append(item.item)
    return tuple(values), tuple(changed)
