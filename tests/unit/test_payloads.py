"""Sandboxed templates, the envelope shape and key order, result and template payloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from qhook.domain.fields import FieldDef, OptionDef
from qhook.domain.payloads import (
    PayloadError,
    build_context,
    check_body_template,
    check_template,
    render_body,
    render_text,
)
from qhook.errors import ValidationFailed

RESULT = {
    "@id": 17,
    "date": "2025-10-02 13:37:00",
    "batchnumber_": "B-1234",
    "status_": "released",
    "ph_": None,
}
CHANGES = {"status_": {"old": "draft", "new": "released"}}
WHEN = datetime(2025, 10, 2, 13, 37, tzinfo=UTC)
FIELDS = [
    FieldDef(1, "batchnumber_", "Batch", "text", True, True, 1),
    FieldDef(2, "status_", "Status", "list", False, True, 2, (OptionDef(1, "draft"),)),
]


def context() -> dict[str, object]:
    return build_context(
        RESULT,
        actor="alice",
        action="modified",
        set_info={"id": 1, "name": "Batch release"},
        workflow={"id": 4, "name": "To ERP"},
        changes=CHANGES,
        result_version=3,
    )


def test_envelope_shape_and_order() -> None:
    config = {
        "payload": "envelope",
        "subject": "Batch {{ batchnumber_ }} released",
        "message": "By {{ actor }}",
    }
    body = render_body(config, context(), event_id="evt_1", occurred_at=WHEN, result_version=3)
    parsed = json.loads(body)
    assert list(parsed) == [
        "action",
        "subject",
        "message",
        "results",
        "changes",
        "set",
        "workflow",
        "event_id",
        "occurred_at",
        "result_version",
    ]
    assert parsed["result_version"] == 3
    assert parsed["subject"] == "Batch B-1234 released"
    assert parsed["message"] == "By alice"
    assert parsed["results"] == RESULT
    assert parsed["changes"] == CHANGES
    assert parsed["set"] == {"id": 1, "name": "Batch release"}
    assert parsed["occurred_at"] == "2025-10-02T13:37:00Z"
    assert " " not in body.split('"subject"')[0]  # compact
    again = render_body(config, context(), event_id="evt_1", occurred_at=WHEN, result_version=3)
    assert again == body  # deterministic


def test_result_version_is_null_without_one_and_a_template_variable() -> None:
    """A send test's sample result has no version: the key says null rather than going missing."""
    bare = build_context(
        RESULT,
        actor="t",
        action="test",
        set_info={"id": 1, "name": "s"},
        workflow={"id": 1, "name": "w"},
        changes={},
    )
    assert json.loads(render_body({}, bare, event_id="evt_1", occurred_at=WHEN))["result_version"] is None
    config = {"payload": "template", "body_template": '{"v": {{ result_version }}, "s": "{{ status_ }}"}'}
    assert json.loads(render_body(config, context(), event_id="evt_1", occurred_at=WHEN)) == {
        "v": 3,
        "s": "released",
    }
    assert render_text("v{{ result_version }}", context()) == "v3"


DUE = datetime(2031, 3, 3, 7, 0, tzinfo=UTC)


def date_firing(result: dict[str, object], version: int) -> dict[str, object]:
    """The template context of a date firing of ``result`` at ``version``, due at ``DUE``."""
    return build_context(
        result,
        actor="scheduler",
        action="date",
        set_info={"id": 1, "name": "s"},
        workflow={"id": 1, "name": "w"},
        changes={},
        result_version=version,
        due_at=DUE,
    )


def test_due_at_only_in_a_date_firings_body() -> None:
    """A date firing says which due time came due (occurred_at is when the scheduler fired it);
    other bodies keep their keys as they were."""
    fired = date_firing(RESULT, 2)
    body = json.loads(
        render_body({}, fired, event_id="evt_1", occurred_at=WHEN, result_version=2, due_at=DUE)
    )
    assert list(body)[-2:] == ["result_version", "due_at"] and body["due_at"] == "2031-03-03T07:00:00Z"
    assert render_text("due {{ due_at }}", fired) == "due 2031-03-03T07:00:00Z"
    assert "due_at" not in json.loads(render_body({}, context(), event_id="evt_1", occurred_at=WHEN))
    assert render_text("due {{ due_at }}", context()) == "due "


def test_a_field_named_like_a_later_variable_keeps_its_place_in_templates() -> None:
    """result_version and due_at came after sets had fields: a field of that name still prints
    in a template written for it, while the envelope carries qhook's values."""
    fields = date_firing({**RESULT, "due_at": "2026-05-01", "result_version": "rev B"}, 4)
    assert render_text("{{ due_at }} / {{ result_version }}", fields) == "2026-05-01 / rev B"
    config = {"subject": "{{ result_version }}"}
    body = json.loads(
        render_body(config, fields, event_id="e", occurred_at=WHEN, result_version=4, due_at=DUE)
    )
    assert (body["subject"], body["result_version"], body["due_at"]) == ("rev B", 4, "2031-03-03T07:00:00Z")
    assert body["results"]["result_version"] == "rev B"


def test_result_payload_is_the_flat_result() -> None:
    body = render_body({"payload": "result"}, context(), event_id="e", occurred_at=WHEN)
    assert json.loads(body) == RESULT
    assert body.startswith('{"@id":17,')


def test_template_payload() -> None:
    config = {
        "payload": "template",
        "body_template": '{"batch": {{ batchnumber_|tojson }}, "by": "{{ actor }}"}',
    }
    assert render_body(config, context(), event_id="e", occurred_at=WHEN) == '{"batch":"B-1234","by":"alice"}'
    with pytest.raises(PayloadError):
        render_body(
            {"payload": "template", "body_template": "not json {{ actor }}"},
            context(),
            event_id="e",
            occurred_at=WHEN,
        )


def test_empty_renders_as_nothing_and_set_is_available() -> None:
    assert render_text("pH={{ ph_ }} in {{ set.name }}", context()) == "pH= in Batch release"
    assert render_text("{{ result['@id'] }} {{ changes.status_.old }}", context()) == "17 draft"


def test_sandbox_blocks_unsafe_access() -> None:
    with pytest.raises(PayloadError):
        render_text("{{ ''.__class__.__mro__[1].__subclasses__() }}", context())


def test_template_checks_when_saved() -> None:
    assert check_template("Hello {{ actor }}", "signals[0].subject") == "Hello {{ actor }}"
    with pytest.raises(ValidationFailed) as caught:
        check_template("Hello {{ actor", "signals[0].subject")
    assert caught.value.details[0]["field"] == "signals[0].subject"
    check_body_template('{"b": {{ batchnumber_|tojson }}}', "signals[0].body_template", FIELDS)
    with pytest.raises(ValidationFailed) as caught:
        check_body_template('{"b": {{ batchnumber_ }}}', "signals[0].body_template", FIELDS)
    assert "JSON" in caught.value.message


@pytest.mark.parametrize(
    ("template", "values", "refusal"),
    [
        ("{{ x * 100000000 }}", {"x": "abcdefgh"}, "too much"),  # was 800 MB and 10 s in the request
        ("{{ [x] * 100000000 }}", {"x": 1}, "too much"),
        ("{{ 10 ** 100000 }}", {}, "too large a number"),
        ("{% for i in range(100000) %}{{ x }}{% endfor %}", {"x": "a" * 200}, "renders more than"),
        ("{{ x | center(10 ** 9) }}", {"x": "a"}, "center would make"),
        ("{{ x | indent(10 ** 9) }}", {"x": "a"}, "indent would make"),
        ("{{ '%999999999s' % x }}", {"x": "a"}, "formatted width"),
        ("{{ '%*s' | format(10 ** 9, 'a') }}", {}, "formatted width"),
        ("{{ x | replace('', y) }}", {"x": "a" * 5000, "y": "b" * 5000}, "replace would make"),
        ("{{ lipsum(100000) }}", {}, "lipsum would make"),
        # Printing nothing, no output cap stops this: 10^10 steps in the request saving a result.
        (
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            {},
            "loops run more",
        ),
    ],
)
def test_a_runaway_template_is_a_payload_error_before_it_is_built(
    template: str, values: dict[str, object], refusal: str
) -> None:
    with pytest.raises(PayloadError, match=refusal):
        render_text(template, values)


def test_small_repetition_powers_and_loops_still_render() -> None:
    assert render_text("{{ '-' * 3 }}{{ 2 ** 10 }}{{ 3 * 'ab' }}{{ 1.5 ** 2 }}", {}) == "---1024ababab2.25"
    loops = "{% for x in xs if x > 1 %}{{ x }}{{ loop.length }}{% else %}none{% endfor %}"
    assert render_text(loops, {"xs": [1, 2, 3]}) == "2232"
    assert render_text(loops, {"xs": []}) == "none"
    sized = (
        "{{ x | center(6) }}|{{ '%3s' % x }}|{{ '%s=%d' | format(x, 1) }}|{{ x | replace('', '-') }}"
        "|{{ 7 % 3 }}"
    )
    assert render_text(sized, {"x": "ab"}) == "  ab  | ab|ab=1|-a-b-|1"
    nested = "{% for i in tree recursive %}{{ i.n }}{% if i.c %}({{ loop(i.c) }}){% endif %}{% endfor %}"
    assert render_text(nested, {"tree": [{"n": 1, "c": [{"n": 2, "c": []}]}]}) == "1(2)"


def test_a_template_number_json_cannot_carry_is_a_payload_error() -> None:
    # "| int" on 1e308 makes a 309-digit integer: it used to fail the result's write with a 500.
    config = {"payload": "template", "body_template": '{"x": {{ ph_ | int }}}'}
    with pytest.raises(PayloadError, match="cannot send"):
        render_body(config, {**context(), "ph_": 1e308}, event_id="e", occurred_at=WHEN)


def test_nul_in_rendered_text_becomes_a_replacement_character() -> None:
    assert render_text('{{ "a\\x00b" }}', {}) == "a\ufffdb"
    assert (
        render_text("Batch {{ batchnumber_ }}", {"batchnumber_": "B\x001"}) == "Batch B\ufffd1"
    )  # simple path
