"""domain.json_text reads what json.loads reads, to the same values, except an escaped lone
surrogate, which it refuses with a JSONDecodeError at (or just after) the escape, and a NUL
character, which it refuses naming where it is."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qhook.domain import json_text

SAME = [
    b'{"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]}',
    b"9223372036854775807",
    b"-0.0",
    b"1e308",
    b'"\\ud83d\\ude00 and \\\\ud800"',
    b'[null, true, false, "x\\u00e9", {"n": [1.5, -2]}]',
]


@pytest.mark.parametrize("text", SAME)
def test_the_same_values_as_json_loads(text: bytes) -> None:
    assert json_text.loads(text) == json.loads(text)
    assert json_text.loads(text.decode()) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ('{"lot": "\\ud800"}', 15),
        ('{"lot": "\\udc00x"}', 14),
        ('[\n "ok",\n "\\ud800\\u0041"\n]', 22),
    ],
)
def test_a_lone_surrogate_is_a_decode_error_at_its_escape(text: str, position: int) -> None:
    json.loads(text)  # the standard library takes it
    with pytest.raises(json.JSONDecodeError) as raised:
        json_text.loads(text)
    assert "hex escape" in raised.value.msg
    assert raised.value.pos == position
    assert raised.value.doc == text


def test_malformed_json_keeps_json_loads_error_type() -> None:
    with pytest.raises(ValueError, match="line 1 column"):
        json_text.loads(b'{"a": 1,}')


no_nul = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=json_text.INT_MIN, max_value=json_text.INT_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | no_nul,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(no_nul, inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_any_encoded_value_reads_back_as_json_loads_reads_it(value: object) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        assert json_text.loads(text) == json.loads(text)


@pytest.mark.parametrize(
    ("value", "place"),
    [
        ({"values": {"batchnumber_": "L-\x001"}}, "values.batchnumber_"),
        ([{"a": "x"}, {"a": "y\x00"}], "1.a"),
        ({"k\x00": 1}, "k\x00"),
        ("\x00", "the value"),
    ],
)
def test_a_nul_is_refused_naming_its_place(value: object, place: str) -> None:
    text = json.dumps(value)
    with pytest.raises(json.JSONDecodeError) as raised:
        json_text.loads(text.encode())
    assert json_text.refused(raised.value.msg) == (place, json_text.NUL_EXPECTED)
    assert raised.value.pos == text.find("\\u0000")


def test_an_escaped_backslash_before_u0000_is_no_nul() -> None:
    assert json_text.loads(b'{"a": "\\\\u0000"}') == {"a": "\\u0000"}
    assert json_text.refused("Expecting value") is None


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ('{"values": {"count_": 99999999999999999999999}}', "values.count_"),
        ("[1, 9223372036854775808]", "1"),
        ('{"a": [{"b": -9223372036854775809}]}', "a.0.b"),
        ("18446744073709551616", "the value"),
    ],
)
def test_an_integer_beyond_64_bits_is_refused_naming_its_place(text: str, place: str) -> None:
    """orjson and both databases hold 64 bits: a longer integer was a 500 deep inside."""
    for given_text in (text, text.encode()):
        with pytest.raises(json.JSONDecodeError) as raised:
            json_text.loads(given_text)
        assert json_text.refused(raised.value.msg) == (place, json_text.INT_EXPECTED)


def test_integers_within_64_bits_and_long_digit_runs_elsewhere_pass() -> None:
    edge = '{"max": 9223372036854775807, "min": -9223372036854775808, "id": "12345678901234567890123"}'
    assert json_text.loads(edge)["max"] == 2**63 - 1
    assert json_text.loads("1.2345678901234567890123e5") == 123456.78901234567


@given(json_values, st.data())
def test_a_nul_anywhere_in_a_value_is_refused(value: object, data: st.DataObject) -> None:
    spoiled = {"spoiled": [value, data.draw(no_nul) + "\x00"]}
    with pytest.raises(json.JSONDecodeError):
        json_text.loads(json.dumps(spoiled))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"filter": {"value": 1e309}}', "filter.value"),
        ('{"a": [1, -1e309]}', "a.1"),
        ("1E+400", "the value"),
        ('{"n": ' + "9" * 320 + ".0}", "n"),
    ],
)
def test_a_number_too_large_for_a_float_is_refused_naming_where(text: str, where: str) -> None:
    """1e309 was read as infinity, stored, shown as null and refused when sent back."""
    with pytest.raises(json.JSONDecodeError) as refused:
        json_text.loads(text)
    assert json_text.refused(refused.value.msg) == (where, json_text.FINITE_EXPECTED)
    assert json_text.loads('{"ok": 1e308, "text": "1e999"}') == {"ok": 1e308, "text": "1e999"}


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", '{"a": NaN}'])
def test_nan_and_infinity_are_no_json(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        json_text.loads(text)


@pytest.mark.parametrize(
    ("text", "place", "position"),
    [
        ('{"status_": "released", "status_": "rejected"}', "status_", 24),
        ('{"results": [{"lot_": 1}, {"lot_": 2, "x": {"k": 1, "k": 1}}]}', "results.1.x.k", 52),
        ('[{"a": 1, "b": 2, "a": 1}]', "0.a", 18),
        ('{"x": "a.b", "a.b": 1, "a.b": 2}', "a.b", 23),  # a key with a dot; "a.b" as a value first
    ],
)
def test_a_key_given_twice_is_refused_naming_its_place(text: str, place: str, position: int) -> None:
    assert json.loads(text)  # the standard library keeps the last, silently
    for given_as in (text, text.encode()):
        with pytest.raises(json.JSONDecodeError) as raised:
            json_text.loads(given_as)
        assert json_text.refused(raised.value.msg) == (place, json_text.TWICE_EXPECTED)
        assert raised.value.pos == position


def test_text_qhook_made_itself_may_repeat_a_key_and_keeps_the_last() -> None:
    """A rendered body template whose data repeats a key: refusing it stopped a saved workflow's
    deliveries; the template itself is checked when saved."""
    assert json_text.loads('{"a": 1, "b": {"a": 2, "a": 3}}', repeated_keys=True) == {"a": 1, "b": {"a": 3}}
