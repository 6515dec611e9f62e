"""Field definitions, value coercion, presentation and changes (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qhook.domain.fields import (
    FieldDef,
    OptionDef,
    changes_between,
    check_required,
    coerce_value,
    coerce_values,
    flat_result,
    format_flat,
    format_iso,
    merge_values,
    native_values,
    new_field_defs,
    patched_field_defs,
)
from qhook.domain.ids import decode_cursor, encode_cursor, new_uid, ulid
from qhook.errors import Conflict, ValidationFailed

SPEC = [
    {"name": "batchnumber_", "label": "Batch number", "type": "text", "required": True},
    {"name": "status_", "type": "list", "options": ["draft", "released", "blocked"]},
    {"name": "ph_", "type": "number"},
    {"name": "count_", "type": "integer"},
    {"name": "ok_", "type": "boolean"},
    {"name": "made_", "type": "date"},
    {"name": "expiry_", "type": "datetime"},
]


def fields() -> tuple[FieldDef, ...]:
    return tuple(
        FieldDef(i, f.name, f.label, f.type, f.required, f.active, f.position, f.options)
        for i, f in enumerate(new_field_defs(SPEC), start=1)
    )


def field(name: str) -> FieldDef:
    return next(f for f in fields() if f.name == name)


def test_new_set_fields_get_option_ids_and_default_labels() -> None:
    defs = new_field_defs(SPEC)
    status = defs[1]
    assert status.options == (
        OptionDef(1, "draft", True),
        OptionDef(2, "released", True),
        OptionDef(3, "blocked", True),
    )
    assert status.label == "status_"
    assert defs[0].label == "Batch number" and defs[0].required
    assert [d.position for d in defs] == list(range(1, 8))


@pytest.mark.parametrize(
    ("spec", "path", "expected"),
    [
        ({"name": "bad name", "type": "text"}, "fields[0].name", "letters, digits"),
        ({"name": "date", "type": "text"}, "fields[0].name", "system key"),
        ({"name": "Date", "type": "text"}, "fields[0].name", "system key"),
        ({"name": "lastModificationDate", "type": "text"}, "fields[0].name", "system key"),
        ({"name": "x_", "type": "colour"}, "fields[0].type", "one of text"),
        ({"name": "x_", "type": "list", "options": ["a", "A"]}, "fields[0].options[1]", "unique"),
        ({"name": "x_", "type": "text", "options": ["a"]}, "fields[0].options", "only list fields"),
        ({"name": "x_", "type": "text", "required": "yes"}, "fields[0].required", "true or false"),
    ],
)
def test_bad_definitions_name_the_field(spec: dict[str, object], path: str, expected: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        new_field_defs([spec])
    assert caught.value.details[0]["field"] == path
    assert expected in caught.value.details[0]["error"]


def test_duplicate_field_names_refused() -> None:
    with pytest.raises(ValidationFailed) as caught:
        new_field_defs([{"name": "a_", "type": "text"}, {"name": "A_", "type": "number"}])
    assert caught.value.details[0]["field"] == "fields[1].name"


def test_patch_adds_relabels_deactivates_and_never_drops() -> None:
    before = fields()
    after = patched_field_defs(
        before,
        [
            {"name": "status_", "label": "Status", "options": [{"id": 1, "label": "Draft"}, "quarantine"]},
            {"name": "ph_", "active": False},
            {"name": "status_", "options": [{"id": 3, "active": False}]},
            {"name": "note_", "type": "text"},
        ],
    )
    assert len(after) == len(before) + 1
    status = next(f for f in after if f.name == "status_")
    assert status.label == "Status"
    assert status.options == (
        OptionDef(1, "Draft", True),
        OptionDef(2, "released", True),
        OptionDef(3, "blocked", False),
        OptionDef(4, "quarantine", True),
    )
    assert not next(f for f in after if f.name == "ph_").active
    note = after[-1]
    assert (note.name, note.id, note.position) == ("note_", 0, 8)


def test_patch_refuses_type_change_naming_the_field() -> None:
    with pytest.raises(Conflict) as caught:
        patched_field_defs(fields(), [{"name": "ph_", "type": "text"}])
    assert "ph_" in caught.value.message
    assert caught.value.status == 409


def test_patch_refuses_unknown_option_id() -> None:
    with pytest.raises(ValidationFailed) as caught:
        patched_field_defs(fields(), [{"name": "status_", "options": [{"id": 9, "label": "x"}]}])
    assert caught.value.details[0]["field"] == "fields[0].options[0].id"


@pytest.mark.parametrize(
    ("name", "raw", "stored"),
    [
        ("ph_", "3.5", 3.5),
        ("ph_", 7, 7.0),
        ("ph_", "<321", "<321"),
        ("ph_", " >= 0.5 ", ">= 0.5"),
        ("ph_", "", None),
        ("count_", "12", 12),
        ("count_", 4.0, 4),
        ("count_", "4.0", 4),
        ("ok_", "true", True),
        ("ok_", "FALSE", False),
        ("ok_", 1, True),
        ("ok_", "0", False),
        ("made_", "2025-10-02", "2025-10-02"),
        ("made_", "2025-10-02 13:37:00", "2025-10-02"),
        ("made_", "2026-06-01T23:30:00-05:00", "2026-06-01"),  # the day as written, not in UTC
        ("made_", "2026-06-02T00:30:00+02:00", "2026-06-02"),
        ("expiry_", "2025-10-02T15:37:00+02:00", "2025-10-02T13:37:00Z"),
        ("expiry_", "2025-10-02 13:37:00", "2025-10-02T13:37:00Z"),
        ("expiry_", "2025-10-02T13:37:00.123Z", "2025-10-02T13:37:00Z"),
        ("expiry_", "2025-10-02", "2025-10-02T00:00:00Z"),
        ("status_", "released", 2),
        ("status_", "RELEASED", 2),
        ("status_", 3, 3),
        ("status_", "1", 1),
        ("batchnumber_", "B-1", "B-1"),
        ("batchnumber_", 1234, "1234"),
        ("batchnumber_", None, None),
    ],
)
def test_coercion(name: str, raw: object, stored: object) -> None:
    assert coerce_value(field(name), raw) == stored


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("ph_", "abc", "a number"),
        ("ph_", True, "a number"),
        ("ph_", "nan", "finite"),
        ("ph_", "7,5", "a point for decimals (7.5, not 7,5)"),
        ("count_", "1.5", "whole number"),
        ("ok_", "maybe", "true or false"),
        ("made_", "02-10-2025", "a date"),
        ("expiry_", "soon", "a date and time"),
        ("status_", "unknown", "'draft', 'released', 'blocked'"),
        ("status_", 9, "one of the options"),
        ("batchnumber_", {"a": 1}, "text"),
    ],
)
def test_bad_values_say_what_was_expected(name: str, raw: object, expected: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        coerce_values(fields(), {name: raw})
    detail = caught.value.details[0]
    assert detail["field"] == f"values.{name}"
    assert expected in detail["error"]


def test_unknown_and_inactive_fields_are_named() -> None:
    defs = patched_field_defs(fields(), [{"name": "ph_", "active": False}])
    with pytest.raises(ValidationFailed) as caught:
        coerce_values(defs, {"nope_": 1, "ph_": 3, "count_": "x"})
    assert [d["field"] for d in caught.value.details] == ["values.nope_", "values.ph_", "values.count_"]
    assert "no such field" in caught.value.details[0]["error"]
    assert "deactivated" in caught.value.details[1]["error"]


def test_inactive_option_refused_and_add_list_options() -> None:
    defs = patched_field_defs(fields(), [{"name": "status_", "options": [{"id": 3, "active": False}]}])
    with pytest.raises(ValidationFailed, match="deactivated"):
        coerce_values(defs, {"status_": "blocked"})
    coerced = coerce_values(defs, {"status_": "on hold"}, add_options=True)
    assert coerced.values == {"status_": 4}
    assert coerced.new_options == {"status_": (OptionDef(4, "on hold", True),)}


def test_required_and_merge() -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_required(fields(), {"ph_": 1.0})
    assert caught.value.details == [
        {"field": "values.batchnumber_", "error": "a value; this field is required"}
    ]
    merged = merge_values({"batchnumber_": "B", "ph_": 1.0}, {"ph_": None, "count_": 2})
    assert merged == {"batchnumber_": "B", "count_": 2}


def test_flat_and_native_presentation() -> None:
    when = datetime(2025, 10, 2, 13, 37, tzinfo=UTC)
    stored = {"batchnumber_": "B-1234", "status_": 2, "expiry_": "2026-01-01T00:00:00Z", "ph_": "<321"}
    flat = flat_result(17, when, stored, fields())
    assert flat == {
        "@id": 17,
        "date": "2025-10-02 13:37:00",
        "batchnumber_": "B-1234",
        "status_": "released",
        "ph_": "<321",
        "count_": None,
        "ok_": None,
        "made_": None,
        "expiry_": "2026-01-01 00:00:00",
    }
    native = native_values(stored, fields())
    assert native["status_"] == "released"
    assert native["expiry_"] == "2026-01-01T00:00:00Z"
    assert native["count_"] is None


def test_changes_between() -> None:
    before = {"@id": 1, "date": "2025-01-01 00:00:00", "a_": 1, "b_": "x"}
    after = {"@id": 1, "date": "2025-01-02 00:00:00", "a_": 1, "b_": None}
    assert changes_between(before, after) == {
        "date": {"old": "2025-01-01 00:00:00", "new": "2025-01-02 00:00:00"},
        "b_": {"old": "x", "new": None},
    }
    assert changes_between(None, {"@id": 2, "a_": 1, "b_": None}) == {"a_": {"old": None, "new": 1}}
    assert changes_between(before, before) == {}


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_any_finite_number_round_trips_through_text(value: float) -> None:
    assert coerce_value(field("ph_"), repr(value)) == value
    assert coerce_value(field("ph_"), value) == value


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_integers_from_text(value: int) -> None:
    assert coerce_value(field("count_"), str(value)) == value


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2999, 1, 1), timezones=st.just(UTC)))
def test_datetime_stored_form_is_a_fixed_point(moment: datetime) -> None:
    stored = coerce_value(field("expiry_"), moment.isoformat())
    assert isinstance(stored, str) and stored.endswith("Z")
    assert coerce_value(field("expiry_"), stored) == stored


@given(st.dictionaries(st.sampled_from(["a_", "b_", "c_"]), st.one_of(st.none(), st.integers())))
def test_changes_are_empty_only_for_equal_results(values: dict[str, int | None]) -> None:
    before = {"a_": 1, "b_": None, "c_": 3}
    after = {**before, **values}
    changes = changes_between(before, after)
    assert (changes == {}) == (before == after)
    for name, change in changes.items():
        assert change == {"old": before[name], "new": after[name]}


def test_uids_sort_by_time_and_cursors_round_trip() -> None:
    early = datetime(2025, 1, 1, tzinfo=UTC)
    late = datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC)
    first, second = new_uid("evt", early), new_uid("evt", late)
    assert first.startswith("evt_") and len(first) == 30
    assert first < second
    assert ulid(early, b"\0" * 10) == "01JGFJJZ00" + "0" * 16  # 1735689600000 ms in Crockford base32
    assert decode_cursor(encode_cursor(42)) == 42
    with pytest.raises(ValueError):
        decode_cursor("garbage!")


@pytest.mark.parametrize(
    ("moment", "iso", "flat"),
    [
        (datetime(1, 1, 1, 0, 30, tzinfo=UTC), "0001-01-01T00:30:00Z", "0001-01-01 00:30:00"),
        (datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC), "0999-12-31T23:59:59Z", "0999-12-31 23:59:59"),
        (datetime(2025, 10, 2, 13, 37, tzinfo=UTC), "2025-10-02T13:37:00Z", "2025-10-02 13:37:00"),
    ],
)
def test_years_are_written_with_four_digits(moment: datetime, iso: str, flat: str) -> None:
    # The C library's %Y wrote the year 1 as "1": no ISO 8601 reader takes that back.
    assert (format_iso(moment), format_flat(moment)) == (iso, flat)
    assert datetime.fromisoformat(format_iso(moment)) == moment


def test_option_labels_are_at_most_200_characters() -> None:
    """A 100,000-character option was accepted, and every later error of the set quoted it."""
    with pytest.raises(ValidationFailed) as refused:
        new_field_defs([{"name": "s_", "type": "list", "options": ["ok", "x" * 201]}])
    assert refused.value.details[0] == {
        "field": "fields[0].options[1]",
        "error": "an option label of at most 200 characters",
    }
    [field] = new_field_defs([{"name": "s_", "type": "list", "options": ["ok"]}])
    added: list[OptionDef] = []
    with pytest.raises(ValueError, match="at most 200 characters to add"):
        coerce_value(field, "y" * 201, added=added, add_options=True)
    assert coerce_value(field, "y" * 200, added=added, add_options=True) == 2 and len(added) == 1
