"""Sample values for a set's fields, so a "send test" body looks like a real result of that set.

Pure: the fields and ``now`` in, stored values out (see ``domain.fields`` for the stored forms).
Names give a hint where they can (``batchnumber_`` gets a batch number, ``operator_`` a person);
everything else gets a plausible value of its type.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from qhook.domain.fields import FieldDef

SAMPLE_RESULT_ID = 0  # no real result has id 0, so receivers can tell a sample from a result

_TEXT_HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("batch", "lot", "charge"), "B-2025-0042"),
    (("operator", "user", "analyst", "person", "name", "by"), "Jane Doe"),
    (("product", "article", "material", "item"), "Paracetamol 500 mg"),
    (("order", "po"), "PO-88213"),
    (("line", "machine", "equipment"), "Line 3"),
    (("sample",), "S-001"),
    (("email", "mail"), "jane.doe@example.com"),
    (("note", "comment", "remark", "description"), "Sample sent from qhook (send test)"),
)


def _text(field: FieldDef) -> str:
    name = field.name.lower()
    for words, value in _TEXT_HINTS:
        if any(word in name for word in words):
            return value
    return f"sample {field.label or field.name}".strip()


def sample_value(field: FieldDef, now: datetime) -> Any:
    """A stored value of ``field``'s type; a list field gets its first active option."""
    if field.type == "text":
        return _text(field)
    if field.type == "number":
        return 7.2 if "ph" in field.name.lower() else 98.6
    if field.type == "integer":
        return 42
    if field.type == "boolean":
        return True
    if field.type == "date":
        return now.astimezone(UTC).strftime("%Y-%m-%d")
    if field.type == "datetime":
        return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if field.type == "list":
        option = next((o for o in field.options if o.active), None)
        return option.id if option is not None else None
    return None


def sample_values(fields: Sequence[FieldDef], now: datetime) -> dict[str, Any]:
    """Stored values for every active field of a set."""
    values = {f.name: sample_value(f, now) for f in fields if f.active}
    return {name: value for name, value in values.items() if value is not None}
