"""The batch fan-out's shortcuts give exactly what the general functions give (pure).

``payloads.body_plan`` must render every body byte for byte as ``render_body`` with a template
context; ``fields.FlatView`` must present a result as ``flat_result``; ``changes_between`` for a
new result must match its general form.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from qhook.domain.fields import (
    FieldDef,
    FlatView,
    OptionDef,
    ValueCoercer,
    changes_between,
    coerce_values,
    flat_result,
)
from qhook.domain.filters import inputs, parse_filter
from qhook.domain.payloads import body_plan, build_context, event_view, render_body

SET_INFO = {"id": 3, "name": 'Batch "release" é'}
WORKFLOW = {"id": 9, "name": "ERP <sync>"}
WHEN = datetime(2025, 10, 2, 13, 37, 5, 123456, tzinfo=UTC)

names = st.sampled_from(
    [
        "batchnumber_",
        "status_",
        "ph_",
        "missing_",
        "result",
        "actor",
        "action",
        "set",
        "workflow",
        "changes",
        "result_version",
        "due_at",
    ]
)
# Valid Unicode only: a lone surrogate cannot be written as UTF-8 JSON by either path (orjson refuses).
literal = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="{}%#"), max_size=12
)
plain_template = st.lists(st.one_of(literal, names.map(lambda n: "{{ " + n + " }}")), max_size=5).map("".join)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
flat = st.fixed_dictionaries(
    {"@id": st.integers(1, 10**6), "date": st.just("2025-10-02 13:37:05")},
    # A field may share a template variable's name: actor's variable wins, and a field named
    # result_version or due_at wins over those later variables, alike in both paths.
    optional={
        "batchnumber_": scalar,
        "status_": scalar,
        "ph_": scalar,
        "actor": scalar,
        "result_version": scalar,
        "due_at": scalar,
    },
)


def general(
    config: dict[str, Any], result: dict[str, Any] | None, changes: dict[str, Any], version: int | None = 7
) -> str:
    context = build_context(
        result,
        actor="anna",
        action="new",
        set_info=SET_INFO,
        workflow=WORKFLOW,
        changes=changes,
        result_version=version,
    )
    return render_body(
        config, context, event_id="evt_01J9Z0000000000000000000", occurred_at=WHEN, result_version=version
    )


def planned(
    config: dict[str, Any], result: dict[str, Any] | None, changes: dict[str, Any], version: int | None = 7
) -> str:
    plan = body_plan(config, set_info=SET_INFO, workflow=WORKFLOW)
    assert plan is not None
    view = event_view(
        result,
        action="new",
        actor="anna",
        changes=changes,
        event_id="evt_01J9Z0000000000000000000",
        occurred_at=WHEN,
        result_version=version,
    )
    return plan.render(view)


@settings(max_examples=300)
@given(
    subject=plain_template,
    message=plain_template,
    result=flat,
    payload=st.sampled_from(["envelope", "result"]),
)
def test_planned_bodies_are_byte_for_byte_render_body(
    subject: str, message: str, result: dict[str, Any], payload: str
) -> None:
    config = {"url": "http://127.0.0.1:9/x", "payload": payload, "subject": subject, "message": message}
    changes = {k: {"old": None, "new": v} for k, v in result.items() if k != "@id" and v is not None}
    assert planned(config, result, changes) == general(config, result, changes)


def test_no_payload_key_and_empty_result_match_too() -> None:
    config = {"url": "http://x", "subject": "{{ batchnumber_ }} by {{ actor }}"}
    assert planned(config, None, {}) == general(config, None, {})
    assert planned(config, {"batchnumber_": "B-1"}, {}) == general(config, {"batchnumber_": "B-1"}, {})
    assert planned(config, None, {}, None) == general(config, None, {}, None)  # a sample: no version
    versioned = {"url": "http://x", "subject": "v{{ result_version }}"}
    assert '"subject":"v7"' in planned(versioned, None, {}) == general(versioned, None, {})


def test_templates_beyond_plain_names_take_the_general_path() -> None:
    for config in (
        {"payload": "template", "body_template": '{"a": 1}'},
        {"subject": "{{ batchnumber_ | upper }}"},
        {"message": "{% if ph_ %}x{% endif %}"},
        {"subject": "{{ range }}"},
        {"subject": "{{ result.ph_ }}"},
    ):
        assert body_plan(config, set_info=SET_INFO, workflow=WORKFLOW) is None


FIELDS = (
    FieldDef(1, "batchnumber_", "Batch", "text", True, True, 2),
    FieldDef(
        2, "status_", "Status", "list", False, True, 1, (OptionDef(1, "draft"), OptionDef(2, "released"))
    ),
    FieldDef(3, "ph_", "pH", "number", False, True, 3),
    FieldDef(4, "seen_", "Seen", "datetime", False, True, 4),
    FieldDef(5, "old_", "Old", "text", False, False, 5),
    FieldDef(6, "ok_", "OK", "boolean", False, True, 6),
)
stored = st.fixed_dictionaries(
    {},
    optional={
        "batchnumber_": st.text(max_size=5),
        "status_": st.one_of(st.integers(0, 3), st.booleans(), st.text(max_size=3)),
        "ph_": st.one_of(st.floats(allow_nan=False), st.just("<3")),
        "seen_": st.sampled_from(["2025-10-02T13:37:00Z", "not a time", ""]),
        "old_": st.text(max_size=3),
        "ok_": st.booleans(),
    },
)


@given(values=stored, seconds=st.integers(0, 10**8))
def test_flat_view_presents_as_flat_result(values: dict[str, Any], seconds: int) -> None:
    date = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    # repr: the same keys in the same order with values of the same types (True is not 1)
    assert repr(FlatView(FIELDS).flat(7, date, values)) == repr(flat_result(7, date, values, FIELDS))


@given(after=flat)
def test_changes_of_a_new_result_as_the_general_form(after: dict[str, Any]) -> None:
    old: dict[str, Any] = {}
    keys = [k for k in after if k != "@id"]
    expected = {k: {"old": old.get(k), "new": after.get(k)} for k in keys if old.get(k) != after.get(k)}
    assert repr(changes_between(None, after)) == repr(expected)


LIST_FIELDS = (
    FieldDef(
        1,
        "status_",
        "Status",
        "list",
        False,
        True,
        1,
        (
            OptionDef(1, "draft"),
            OptionDef(2, "Released"),
            OptionDef(3, "old", active=False),
            OptionDef(4, "7"),
        ),
    ),
    FieldDef(2, "ph_", "pH", "number", False, True, 2),
    FieldDef(3, "gone_", "Gone", "text", False, False, 3),
)
raw_values = st.dictionaries(
    st.sampled_from(["status_", "ph_", "gone_", "nope_"]),
    st.one_of(
        st.sampled_from(
            ["draft", " draft ", "released", "Released", "old", "new", "7", "", " ", "4", 2, 2.0, True]
        ),
        st.none(),
        st.floats(allow_nan=False),
    ),
)


def _outcome(call: Any) -> str:
    try:
        return repr(call())
    except Exception as exc:  # the refusal must be the same too, message and details
        return f"{type(exc).__name__}: {exc} {getattr(exc, 'details', None)}"


@given(raw=raw_values, add=st.booleans())
def test_value_coercer_answers_as_coerce_values(raw: dict[str, Any], add: bool) -> None:
    coercer = ValueCoercer(LIST_FIELDS)
    assert _outcome(lambda: coercer.coerce(raw, add_options=add)) == _outcome(
        lambda: coerce_values(LIST_FIELDS, raw, add_options=add)
    )


def test_filter_inputs_name_every_field_a_filter_reads() -> None:
    fields = [FieldDef(i, n, n, "text", False, True, i) for i, n in enumerate(["a_", "b_", "c_"])]
    node = parse_filter(
        {
            "all": [
                {"field": "a_", "op": "eq", "value": "x"},
                {"not": {"any": [{"field": "b_", "op": "changed"}, {"field": "a_", "op": "empty"}]}},
                {"field": "c_", "op": "changed"},
            ]
        },
        fields,
    )
    values, changed = inputs(node)
    assert sorted(values) == ["a_"] and sorted(changed) == ["b_", "c_"]
    assert inputs(None) == ((), ())
