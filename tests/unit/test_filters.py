"""Filter parsing and evaluation: every operator on every type, tree paths in errors, runtime errors."""

from __future__ import annotations

from typing import Any

import pytest

from qhook.domain.fields import FieldDef, OptionDef
from qhook.domain.filters import OPS, OPS_BY_TYPE, evaluate, never_met, parse_filter
from qhook.errors import ValidationFailed


def field(name: str, type_: str, options: tuple[str, ...] = ()) -> FieldDef:
    opts = tuple(OptionDef(i + 1, label) for i, label in enumerate(options))
    return FieldDef(0, name, name, type_, False, True, 0, opts)  # type: ignore[arg-type]


FIELDS = [
    field("batch_", "text"),
    field("status_", "list", ("draft", "released", "blocked")),
    field("ph_", "number"),
    field("count_", "integer"),
    field("ok_", "boolean"),
    field("expiry_", "date"),
    field("tested_", "datetime"),
]

RESULT = {
    "@id": 17,
    "date": "2025-10-02 13:37:00",
    "batch_": "B-1234",
    "status_": "released",
    "ph_": 6.8,
    "count_": 3,
    "ok_": True,
    "expiry_": "2025-12-31",
    "tested_": "2025-10-01 08:00:00",
}


def check(leaf: dict[str, Any], result: dict[str, Any] | None = None, changes: Any = None) -> bool:
    node = parse_filter(leaf, FIELDS)
    return evaluate(node, RESULT if result is None else result, changes)[0]


CASES = [
    # text
    ({"field": "batch_", "op": "eq", "value": "B-1234"}, True),
    ({"field": "batch_", "op": "ne", "value": "B-1234"}, False),
    ({"field": "batch_", "op": "in", "value": ["A", "B-1234"]}, True),
    ({"field": "batch_", "op": "not_in", "value": ["A", "B-1234"]}, False),
    ({"field": "batch_", "op": "contains", "value": "12"}, True),
    ({"field": "batch_", "op": "not_contains", "value": "12"}, False),
    ({"field": "batch_", "op": "starts_with", "value": "B-"}, True),
    ({"field": "batch_", "op": "ends_with", "value": "99"}, False),
    ({"field": "batch_", "op": "empty"}, False),
    ({"field": "batch_", "op": "not_empty"}, True),
    # list (by label, or by option id in the filter)
    ({"field": "status_", "op": "eq", "value": "released"}, True),
    ({"field": "status_", "op": "eq", "value": 2}, True),
    ({"field": "status_", "op": "ne", "value": "draft"}, True),
    ({"field": "status_", "op": "in", "value": ["draft", "blocked"]}, False),
    ({"field": "status_", "op": "not_in", "value": ["draft", "blocked"]}, True),
    ({"field": "status_", "op": "starts_with", "value": "rel"}, True),
    # number
    ({"field": "ph_", "op": "eq", "value": 6.8}, True),
    ({"field": "ph_", "op": "lt", "value": 7}, True),
    ({"field": "ph_", "op": "lte", "value": 6.8}, True),
    ({"field": "ph_", "op": "gt", "value": 6.8}, False),
    ({"field": "ph_", "op": "gte", "value": 6.5}, True),
    ({"field": "ph_", "op": "in", "value": [6.8, 7]}, True),
    # integer
    ({"field": "count_", "op": "eq", "value": 3}, True),
    ({"field": "count_", "op": "gt", "value": 3}, False),
    ({"field": "count_", "op": "gte", "value": 3}, True),
    ({"field": "count_", "op": "lt", "value": 4}, True),
    ({"field": "count_", "op": "lte", "value": 2}, False),
    ({"field": "count_", "op": "not_in", "value": [1, 2]}, True),
    ({"field": "@id", "op": "eq", "value": 17}, True),
    # boolean
    ({"field": "ok_", "op": "eq", "value": True}, True),
    ({"field": "ok_", "op": "ne", "value": True}, False),
    ({"field": "ok_", "op": "not_empty"}, True),
    # date
    ({"field": "expiry_", "op": "eq", "value": "2025-12-31"}, True),
    ({"field": "expiry_", "op": "lt", "value": "2026-01-01"}, True),
    ({"field": "expiry_", "op": "gt", "value": "2026-01-01"}, False),
    ({"field": "expiry_", "op": "in", "value": ["2025-12-31"]}, True),
    # datetime (the result's own date too)
    ({"field": "tested_", "op": "gte", "value": "2025-10-01T08:00:00Z"}, True),
    ({"field": "tested_", "op": "lt", "value": "2025-10-01T08:00:00Z"}, False),
    ({"field": "tested_", "op": "eq", "value": "2025-10-01T10:00:00+02:00"}, True),
    ({"field": "date", "op": "gt", "value": "2025-10-01T00:00:00Z"}, True),
]


@pytest.mark.parametrize(("leaf", "expected"), CASES)
def test_every_operator_and_type(leaf: dict[str, Any], expected: bool) -> None:
    assert check(leaf) is expected


def test_every_operator_is_covered_somewhere() -> None:
    used = {leaf["op"] for leaf, _ in CASES} | {"changed"}
    assert used == set(OPS)
    assert set().union(*OPS_BY_TYPE.values()) == set(OPS)


def test_empty_values() -> None:
    empty = {**RESULT, "batch_": None, "ph_": None, "status_": None}
    assert check({"field": "batch_", "op": "empty"}, empty)
    assert check({"field": "ph_", "op": "empty"}, empty)
    assert not check({"field": "ph_", "op": "lt", "value": 100}, empty)
    assert not check({"field": "ph_", "op": "gte", "value": 0}, empty)
    assert check({"field": "status_", "op": "ne", "value": "draft"}, empty)
    assert not check({"field": "batch_", "op": "starts_with", "value": ""}, empty)
    assert check({"field": "batch_", "op": "not_contains", "value": "x"}, empty)


def test_changed() -> None:
    leaf = {"field": "status_", "op": "changed"}
    assert check(leaf, changes={"status_": {"old": "draft", "new": "released"}})
    assert not check(leaf, changes={"ph_": {"old": 1, "new": 2}})
    assert not check(leaf, changes={})


def test_tree_and_reason() -> None:
    tree = {
        "all": [
            {"field": "status_", "op": "eq", "value": "released"},
            {
                "any": [
                    {"field": "ph_", "op": "gte", "value": 6.5},
                    {"not": {"field": "batch_", "op": "empty"}},
                ]
            },
        ]
    }
    node = parse_filter(tree, FIELDS)
    assert evaluate(node, RESULT)[0]
    met, reason = evaluate(node, {**RESULT, "status_": "draft"})
    assert not met
    assert reason == "filter not met: status_ is 'draft', expected eq 'released'"
    met, reason = evaluate(node, {**RESULT, "ph_": 6.0, "batch_": None})
    assert not met
    assert reason.startswith("filter not met: none of: ph_ is 6.0, expected gte 6.5; not (")
    assert evaluate(None, RESULT) == (True, "no filter")
    assert parse_filter({}, FIELDS) is None


def test_a_value_that_cannot_settle_a_comparison_is_not_met_with_reason() -> None:
    node = parse_filter({"field": "ph_", "op": "gt", "value": 300}, FIELDS)
    met, reason = evaluate(node, {**RESULT, "ph_": "<321"})
    assert not met
    assert reason == "filter not met: ph_ is '<321', which cannot say whether gt 300.0"


@pytest.mark.parametrize(
    ("value", "op", "expected", "met"),
    [
        ("<0.5", "lt", 1, True),  # below 0.5, so below 1
        ("<0.5", "lt", 0.5, True),
        ("<=0.5", "lt", 0.5, None),  # it may be 0.5
        ("<=0.5", "lte", 0.5, True),
        ("<0.5", "lt", 0.3, None),  # it may be 0.2 or 0.4
        ("<0.5", "gt", 0.5, False),
        ("<0.5", "gte", 0.5, False),
        ("<=0.5", "gte", 0.5, None),
        ("<0.5", "gt", 0.1, None),
        (">100", "gt", 100, True),
        (">100", "gte", 50, True),
        (">=100", "gt", 100, None),
        (">100", "lt", 100, False),
        (">=100", "lte", 100, None),
        (">100", "lte", 100, False),
        ("≤ 2,5", "lte", 3, True),  # the other spellings the fields accept
        ("≥2", "lt", 2, False),
        ("~5", "gt", 1, None),  # about 5: no bound
    ],
)
def test_a_qualified_number_settles_what_its_bound_allows(
    value: str, op: str, expected: float, met: bool | None
) -> None:
    """ "<0.5" (below the detection limit) made every ordering "cannot compare", so "assay below 1"
    never fired for the cleanest batches."""
    node = parse_filter({"field": "ph_", "op": op, "value": expected}, FIELDS)
    found, reason = evaluate(node, {**RESULT, "ph_": value})
    assert found is (met is True), reason
    assert ("cannot say" in reason) is (met is None), reason


def test_an_unknown_comparison_gives_the_same_answer_in_any_order() -> None:
    """Before, the first comparison that could not be settled ended the whole evaluation: with
    "ne" first an "any" fired, with "lt" first it did not."""
    unsettled = {"field": "ph_", "op": "lt", "value": 0.3}  # "<0.5" may or may not be below 0.3
    true = {"field": "status_", "op": "eq", "value": "released"}
    false = {"field": "status_", "op": "eq", "value": "draft"}
    qualified = {**RESULT, "ph_": "<0.5"}
    assert check({"any": [unsettled, true]}, qualified) and check({"any": [true, unsettled]}, qualified)
    assert not check({"any": [unsettled, false]}, qualified)
    assert not check({"any": [false, unsettled]}, qualified)
    assert not check({"all": [unsettled, true]}, qualified) and not check(
        {"all": [true, unsettled]}, qualified
    )
    assert not check({"not": unsettled}, qualified)  # still unknown: not met either way
    assert check({"not": {"all": [unsettled, false]}}, qualified)  # false decides the "all"
    met, reason = evaluate(parse_filter({"all": [true, unsettled]}, FIELDS), qualified)
    assert not met and reason == "filter not met: ph_ is '<0.5', which cannot say whether lt 0.3"


def test_a_qualified_number_is_filled_in_and_unequal_to_plain_numbers() -> None:
    """ "<0.5" (below the detection limit) made empty, not_empty, ne, in and not_in an error: a
    "when assay is filled in" workflow never fired for it. Only ordering cannot say."""
    qualified = {**RESULT, "ph_": "<0.5"}
    assert check({"field": "ph_", "op": "not_empty"}, qualified)
    assert not check({"field": "ph_", "op": "empty"}, qualified)
    assert check({"field": "ph_", "op": "ne", "value": 0.5}, qualified)
    assert check({"field": "ph_", "op": "not_in", "value": [0.5, 1]}, qualified)
    assert not check({"field": "ph_", "op": "eq", "value": 0.5}, qualified)
    assert not check({"field": "ph_", "op": "in", "value": [0.5]}, qualified)
    reason = evaluate(parse_filter({"field": "ph_", "op": "eq", "value": 0.5}, FIELDS), qualified)[1]
    assert reason == "filter not met: ph_ is '<0.5', not a plain number, expected eq 0.5"
    assert evaluate(parse_filter({"field": "ph_", "op": "not_empty"}, FIELDS), qualified) == (
        True,
        "filter met: ph_ is '<0.5', expected not_empty",
    )
    assert check({"field": "ph_", "op": "empty"}, {**RESULT, "ph_": ""})


def test_a_date_value_with_a_time_counts_by_its_date() -> None:
    assert check({"field": "expiry_", "op": "eq", "value": "2025-12-31T10:00:00Z"})
    assert check({"field": "expiry_", "op": "eq", "value": " 2025-12-31 "})


@pytest.mark.parametrize(
    ("tree", "place"),
    [
        ({"field": "nope_", "op": "eq", "value": 1}, "filter.field"),
        ({"field": "ph_", "op": "gt", "value": 10**400}, "filter.value"),
        ({"field": "expiry_", "op": "eq", "value": "2026-12-01xyz"}, "filter.value"),
        ({"field": "expiry_", "op": "in", "value": ["2026-12-01", "2026-12-01 10:00x"]}, "filter.value[1]"),
        ({"field": "ph_", "op": "contains", "value": "1"}, "filter.op"),
        ({"field": "ok_", "op": "lt", "value": True}, "filter.op"),
        ({"field": "ph_", "op": "eq", "value": "high"}, "filter.value"),
        ({"field": "count_", "op": "eq", "value": 1.5}, "filter.value"),
        ({"field": "status_", "op": "eq", "value": "gone"}, "filter.value"),
        ({"field": "expiry_", "op": "lt", "value": "tomorrow"}, "filter.value"),
        ({"field": "ph_", "op": "in", "value": 5}, "filter.value"),
        ({"field": "ph_", "op": "in", "value": [5, "x"]}, "filter.value[1]"),
        ({"field": "ph_", "op": "empty", "value": 5}, "filter.value"),
        ({"field": "ph_", "op": "eq"}, "filter.value"),
        ({"field": "ph_", "op": "like", "value": 5}, "filter.op"),
        ({"all": []}, "filter.all"),
        ({"both": []}, "filter.both"),
        (
            {
                "all": [
                    {"field": "ph_", "op": "eq", "value": 1},
                    {"any": [{"field": "ph_", "op": "eq", "value": "x"}]},
                ]
            },
            "filter.all[1].any[0].value",
        ),
        ({"not": {"field": "x_", "op": "empty"}}, "filter.not.field"),
    ],
)
def test_validation_names_the_place(tree: dict[str, Any], place: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_filter(tree, FIELDS)
    assert caught.value.details[0]["field"] == place
    assert caught.value.message.startswith(place + ":")


def test_a_met_all_lists_its_conditions_up_to_a_few_hundred_characters() -> None:
    """Kept on every event's evaluation: a filter of long ``in`` lists stays a short line."""
    long_list = [f"B-{n:04d}" for n in range(200)]
    tree = {
        "all": [
            {"field": "status_", "op": "eq", "value": "released"},
            {"field": "batch_", "op": "in", "value": [*long_list, "B-1234"]},
            {"field": "ph_", "op": "gte", "value": 6.5},
        ]
    }
    met, reason = evaluate(parse_filter(tree, FIELDS), RESULT)
    assert met
    assert reason.startswith("filter met: all of: status_ is 'released', expected eq 'released'; ")
    assert reason.endswith("; and 2 more met") and len(reason) < 500
    short = {
        "all": [
            {"field": "status_", "op": "eq", "value": "released"},
            {"field": "ok_", "op": "eq", "value": True},
        ]
    }
    assert evaluate(parse_filter(short, FIELDS), RESULT) == (
        True,
        "filter met: all of: status_ is 'released', expected eq 'released'; ok_ is True, expected eq True",
    )


def test_a_date_value_written_with_a_time_counts_by_its_date_as_written() -> None:
    """As a stored date field does: in UTC, 23:30 at -05:00 on 31 December is already 1 January."""
    node = parse_filter({"field": "expiry_", "op": "eq", "value": "2025-12-31T23:30:00-05:00"}, FIELDS)
    assert evaluate(node, RESULT) == (True, "filter met: expiry_ is '2025-12-31', expected eq '2025-12-31'")


@pytest.mark.parametrize(
    ("tree", "why"),
    [
        (
            {
                "all": [
                    {"field": "status_", "op": "eq", "value": "released"},
                    {"field": "status_", "op": "eq", "value": "blocked"},
                ]
            },
            "status_: eq 'released' and eq 'blocked' cannot both hold",
        ),
        (
            {
                "all": [
                    {"field": "ph_", "op": "gt", "value": 5},
                    {"all": [{"field": "ph_", "op": "lt", "value": 3}]},
                ]
            },
            "ph_: gt 5.0 and lt 3.0 cannot both hold",
        ),
        (
            {"all": [{"field": "ph_", "op": "gte", "value": 5}, {"field": "ph_", "op": "lt", "value": 5}]},
            "ph_: gte 5.0 and lt 5.0 cannot both hold",
        ),
        (
            {
                "all": [
                    {"field": "batch_", "op": "empty"},
                    {"field": "batch_", "op": "starts_with", "value": "B"},
                ]
            },
            "batch_: empty and starts_with 'B' cannot both hold",
        ),
        (
            {
                "all": [
                    {"field": "status_", "op": "in", "value": ["draft", "blocked"]},
                    {"field": "status_", "op": "eq", "value": "released"},
                ]
            },
            "status_: in ['draft', 'blocked'] and eq 'released' cannot both hold",
        ),
        (
            {
                "all": [
                    {"field": "count_", "op": "eq", "value": 3},
                    {"field": "count_", "op": "ne", "value": 3},
                ]
            },
            "count_: eq 3 and ne 3 cannot both hold",
        ),
        (
            {
                "all": [
                    {"field": "expiry_", "op": "eq", "value": "2025-12-31"},
                    {"field": "expiry_", "op": "gt", "value": "2026-01-01"},
                ]
            },
            "expiry_: eq '2025-12-31' and gt '2026-01-01' cannot both hold",
        ),
        # "" counts as empty and an empty field equals no value: saved without a word, never fired.
        (
            {"field": "batch_", "op": "eq", "value": ""},
            "batch_: eq '' is never met (an empty field equals no value; use empty)",
        ),
        (
            {
                "all": [
                    {"field": "ph_", "op": "gt", "value": 1},
                    {"field": "batch_", "op": "in", "value": [""]},
                ]
            },
            "batch_: in [''] is never met (an empty field equals no value; use empty)",
        ),
    ],
)
def test_a_filter_that_can_never_be_met_says_why(tree: dict[str, Any], why: str) -> None:
    node = parse_filter(tree, FIELDS)
    assert never_met(node) == why
    for result in (RESULT, {**RESULT, "batch_": None, "ph_": 5.0, "count_": 3}):
        assert evaluate(node, result)[0] is False  # what it says is so


@pytest.mark.parametrize(
    "tree",
    [
        {"all": [{"field": "ph_", "op": "gte", "value": 5}, {"field": "ph_", "op": "lte", "value": 5}]},
        {
            "all": [
                {"field": "status_", "op": "in", "value": ["draft", "released"]},
                {"field": "status_", "op": "ne", "value": "draft"},
            ]
        },
        {"all": [{"field": "batch_", "op": "empty"}, {"field": "batch_", "op": "ne", "value": "x"}]},
        {"any": [{"field": "ph_", "op": "gt", "value": 5}, {"field": "ph_", "op": "lt", "value": 3}]},
        {"field": "ok_", "op": "eq", "value": True},
        # An empty field's text is "" for contains (the preview said "would fire" and "never fires").
        {"all": [{"field": "batch_", "op": "empty"}, {"field": "batch_", "op": "contains", "value": ""}]},
        {"field": "batch_", "op": "in", "value": ["", "B-1"]},
        {"field": "batch_", "op": "ne", "value": ""},
    ],
)
def test_a_filter_that_can_be_met_is_not_flagged(tree: dict[str, Any]) -> None:
    assert never_met(parse_filter(tree, FIELDS)) is None


def test_text_is_compared_in_one_unicode_form() -> None:
    """ "Müller" typed as one code point did not equal "Müller" pasted as u + combining diaeresis."""
    composed_name, decomposed_name = "M\u00fcller", "Mu\u0308ller"
    stored = {**RESULT, "batch_": decomposed_name}
    assert check({"field": "batch_", "op": "eq", "value": composed_name}, stored)
    assert check({"field": "batch_", "op": "in", "value": ["x", composed_name]}, stored)
    assert check({"field": "batch_", "op": "starts_with", "value": "M\u00fc"}, stored)
    assert not check({"field": "batch_", "op": "ne", "value": composed_name}, stored)
    assert check(
        {"field": "batch_", "op": "eq", "value": decomposed_name}, {**RESULT, "batch_": composed_name}
    )
    assert (
        never_met(
            parse_filter(
                {
                    "all": [
                        {"field": "batch_", "op": "eq", "value": composed_name},
                        {"field": "batch_", "op": "eq", "value": decomposed_name},
                    ]
                },
                FIELDS,
            )
        )
        is None
    )  # the same text: no contradiction
