"""Parameters of the AlisQI-compatible API: filter forms, sort, fields, flags, presenting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from qhook.domain import compat
from qhook.domain.fields import FieldDef, OptionDef
from qhook.errors import BadRequest

FIELDS = (
    FieldDef(1, "batchnumber_", "Batch", "text", True, True, 1),
    FieldDef(
        2,
        "status_",
        "Status",
        "list",
        False,
        True,
        2,
        (OptionDef(1, "draft"), OptionDef(2, "released"), OptionDef(3, "blocked", active=False)),
    ),
    FieldDef(3, "ph_", "pH", "number", False, True, 3),
    FieldDef(4, "count_", "Count", "integer", False, True, 4),
    FieldDef(5, "ok_", "OK", "boolean", False, True, 5),
    FieldDef(6, "expiry_", "Expiry", "datetime", False, True, 6),
    FieldDef(7, "made_", "Made", "date", False, True, 7),
)


def test_both_filter_forms_mean_the_same() -> None:
    full = compat.parse_filter('{"status_": [{"value": 2}]}', FIELDS)
    by_label = compat.parse_filter('{"status_": [{"value": "released"}]}', FIELDS)
    shorthand = compat.parse_filter('{"status_": "Released"}', FIELDS)
    assert full == by_label == shorthand == (compat.Condition("status_", (2,)),)


def test_filter_values_take_their_stored_form() -> None:
    conditions = compat.parse_filter(
        '{"ph_": "7.5", "count_": "3", "ok_": "true", "made_": "2025-10-02", "batchnumber_": 12}', FIELDS
    )
    assert [c.accepted for c in conditions] == [(7.5,), (3,), (True,), ("2025-10-02",), ("12",)]
    assert compat.parse_filter('{"ph_": "<321"}', FIELDS)[0].accepted == ("<321",)
    # deactivated options still filter: old results keep them
    assert compat.parse_filter('{"status_": "blocked"}', FIELDS)[0].accepted == (3,)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"batchnr": "x"}', "Invalid parameter: filter field 'batchnr'. No such field in set."),
        ('{"status_": "nope"}', "No such option."),
        ('{"count_": "many"}', "filter value 'many' for field 'count_'"),
        ("[1, 2]", "Expected a JSON object"),
        ("{not json", "Expected a JSON object"),
        ('{"status_": [{"id": 2}]}', 'Expected {"value": ...} entries.'),
        ('{"status_": []}', "Expected at least one value."),
        ('{"ph_": [{"value": 5, "operator": ">"}]}', "filter field 'ph_' key 'operator'"),
        ('{"count_": "1e19"}', "a whole number from -9223372036854775808 to 9223372036854775807"),
        ('{"count_": "1_5"}', "digits 0-9"),
        ('{"ph_": "\uff11\uff12"}', "digits 0-9"),
    ],
)
def test_bad_filters_are_400_naming_the_problem(raw: str, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        compat.parse_filter(raw, FIELDS)
    assert caught.value.status == 400
    assert message in caught.value.message


def test_sort_parsing() -> None:
    assert compat.parse_sort(None, FIELDS) == (compat.SortKey("date", True),)
    assert (
        compat.parse_sort(",", FIELDS) == compat.parse_sort(" , ", FIELDS) == (compat.SortKey("date", True),)
    )
    assert compat.parse_sort("ph_:desc,date", FIELDS) == (
        compat.SortKey("ph_", True),
        compat.SortKey("date", False),
    )
    assert compat.parse_sort("id:desc", FIELDS) == (compat.SortKey("@id", True),)
    with pytest.raises(BadRequest) as caught:
        compat.parse_sort("batchnr:asc", FIELDS)
    assert caught.value.message == "Invalid parameter: sort field 'batchnr'. No such field in set."
    with pytest.raises(BadRequest, match="asc or desc"):
        compat.parse_sort("date:sideways", FIELDS)
    # A repeated key adds nothing; thousands of them were a 503 on SQLite.
    assert compat.parse_sort("ph_:desc," * 100, FIELDS) == (compat.SortKey("ph_", True),)
    assert compat.parse_sort("ph_:desc,date,ph_:desc", FIELDS) == (
        compat.SortKey("ph_", True),
        compat.SortKey("date", False),
    )
    wide = tuple(FieldDef(n, f"f{n}_", f"F{n}", "text", False, True, n) for n in range(1, 102))
    with pytest.raises(BadRequest) as too_many:
        compat.parse_sort(",".join(f.name for f in wide), wide)
    assert too_many.value.message == "Invalid parameter: sort. Expected at most 100 sort fields."
    with pytest.raises(BadRequest, match="at most 10000 sort parts"):
        compat.parse_sort("ph_," * 10_001, FIELDS)  # bounded work, however short each part


def test_sort_by_a_field_named_id_is_by_that_field() -> None:
    with_id = (*FIELDS, FieldDef(99, "id", "id", "integer", False, True, 99))
    assert compat.parse_sort("id:desc", with_id) == (compat.SortKey("id", True),)
    assert compat.parse_sort("@id", with_id) == (compat.SortKey("@id", False),)


def test_conditions_and_sort_in_store_terms() -> None:
    conditions = compat.parse_filter(
        '{"status_": [{"value": 1}, {"value": "released"}], "ph_": null}', FIELDS
    )
    assert compat.as_store_filters(conditions) == {"status_": [1, 2], "ph_": [None]}
    keys = compat.parse_sort("@id:desc,ph_", FIELDS)
    assert compat.as_store_sort(keys) == [("id", True), ("ph_", False)]


def test_fields_and_flags() -> None:
    assert compat.parse_fields(None, FIELDS) is None
    assert compat.parse_fields("ph_, status_", FIELDS) == ("ph_", "status_")
    assert compat.parse_fields('["ph_"]', FIELDS) == ("ph_",)
    with pytest.raises(BadRequest, match="fields field 'x_'"):
        compat.parse_fields("x_", FIELDS)
    retired = (*FIELDS, FieldDef(98, "old_", "Old", "text", False, False, 98))
    with pytest.raises(BadRequest) as caught:
        compat.parse_fields("ph_,old_", retired)
    assert caught.value.message == "Invalid parameter: fields field 'old_'. This field is deactivated."
    assert compat.parse_bool("TRUE", "includeId") is True
    assert compat.parse_bool(None, "includeId") is False
    with pytest.raises(BadRequest, match="includeId"):
        compat.parse_bool("maybe", "includeId")
    assert compat.parse_int(None, "limit", default=100, minimum=1, maximum=10_000) == 100
    with pytest.raises(BadRequest, match="between 1 and 10000"):
        compat.parse_int("10001", "limit", default=100, minimum=1, maximum=10_000)
    with pytest.raises(BadRequest, match="Missing parameter: setId"):
        compat.parse_int(None, "setId", minimum=1)
    with pytest.raises(BadRequest, match="whole number"):
        compat.parse_int("abc", "offset", default=0)


def test_present_shapes_a_flat_result() -> None:
    flat = {"@id": 17, "date": "2025-10-02 13:37:00", "batchnumber_": "B-1", "status_": "released"}
    assert compat.present(flat, include_id=False, only_fields=None) == {
        "date": "2025-10-02 13:37:00",
        "batchnumber_": "B-1",
        "status_": "released",
    }
    modified = datetime(2025, 10, 3, 8, 0, tzinfo=UTC)
    assert compat.present(flat, include_id=True, only_fields=("status_",), last_modified=modified) == {
        "@id": 17,
        "date": "2025-10-02 13:37:00",
        "status_": "released",
        "lastModificationDate": "2025-10-03 08:00:00",
    }


def test_results_parameter_forms() -> None:
    assert compat.parse_results_param('{"ph_": 7}') == [{"ph_": 7}]
    assert compat.parse_results_param('[{"ph_": 7}, {"ph_": 8}]') == [{"ph_": 7}, {"ph_": 8}]
    for bad in (None, "", "[]", "[1]", "nope", '"text"'):
        with pytest.raises(BadRequest, match="results"):
            compat.parse_results_param(bad)


def test_a_list_filter_reads_its_value_as_store_results_does() -> None:
    """Options labelled with numbers: text is a label first, a JSON number an id. The id came
    first, and grade "1" found the results of grade "3"."""
    grades = FieldDef(
        8,
        "grade_",
        "Grade",
        "list",
        False,
        True,
        8,
        (OptionDef(1, "3"), OptionDef(2, "2"), OptionDef(3, "1")),
    )
    assert compat.parse_filter('{"grade_": "1"}', (grades,))[0].accepted == (3,)
    assert compat.parse_filter('{"grade_": [{"value": "3"}]}', (grades,))[0].accepted == (1,)
    assert compat.parse_filter('{"grade_": 1}', (grades,))[0].accepted == (1,)
    assert compat.parse_filter('{"status_": "2"}', FIELDS)[0].accepted == (2,)  # no such label: the id


def test_a_repeated_sort_key_counts_once_and_keeps_one_direction() -> None:
    many = ",".join(["date:asc"] * 101)
    assert compat.parse_sort(many, FIELDS) == (compat.SortKey("date", False),)
    with pytest.raises(BadRequest) as caught:
        compat.parse_sort("date:asc,date:desc", FIELDS)
    assert "sort field 'date'" in caught.value.message and "one direction" in caught.value.message
