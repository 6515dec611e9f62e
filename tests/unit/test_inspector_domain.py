"""The inspector's pure parts: scripted answers, validation, URLs, header capture, own-inspector match."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qhook.domain import inspector as domain
from qhook.domain.signing import new_secret
from qhook.errors import ValidationFailed
from qhook.settings import Settings


def _settings(**values: object) -> Settings:
    return Settings(**values)  # type: ignore[arg-type]


def test_default_answer_is_200_ok() -> None:
    answer = domain.answer_for((), 1)
    assert answer.status == 200
    assert json.loads(answer.body) == {"ok": True}
    assert ("Content-Type", "application/json") in answer.headers
    assert answer.delay_ms == 0


def test_fails_three_times_then_succeeds() -> None:
    steps = domain.parse_responses([{"status": 500, "times": 3}, {"status": 200}])
    statuses = [domain.answer_for(steps, n).status for n in range(1, 8)]
    assert statuses == [500, 500, 500, 200, 200, 200, 200]
    assert json.loads(domain.answer_for(steps, 1).body) == {"ok": False}


def test_single_object_applies_forever() -> None:
    steps = domain.parse_responses({"status": 429, "headers": {"Retry-After": "30"}})
    for n in (1, 2, 50):
        answer = domain.answer_for(steps, n)
        assert answer.status == 429
        assert ("Retry-After", "30") in answer.headers


def test_exhausted_script_falls_back_to_default() -> None:
    steps = domain.parse_responses([{"status": 503, "times": 2}])
    assert [domain.answer_for(steps, n).status for n in (1, 2, 3)] == [503, 503, 200]


def test_bodies_delay_and_headers() -> None:
    steps = domain.parse_responses(
        [
            {"status": 201, "body": {"received": True}, "delay_ms": 250, "times": 1},
            {"status": 400, "body": "bad things", "times": 1},
            {"status": 202, "body": "<x/>", "headers": {"Content-Type": "application/xml"}, "times": 1},
            {"status": 204, "body": ""},
        ]
    )
    first = domain.answer_for(steps, 1)
    assert (first.status, first.body, first.delay_ms) == (201, b'{"received":true}', 250)
    assert ("Content-Type", "application/json") in first.headers
    second = domain.answer_for(steps, 2)
    assert second.body == b"bad things"
    assert ("Content-Type", "text/plain; charset=utf-8") in second.headers
    third = domain.answer_for(steps, 3)
    assert third.headers == (("Content-Type", "application/xml"),)
    assert domain.answer_for(steps, 4).body == b""


@pytest.mark.parametrize(
    ("script", "field"),
    [
        ("nope", "responses"),
        ([{"status": 99}], "responses[0].status"),
        ([{"status": "500"}], "responses[0].status"),
        ([{"status": 200, "times": 0}], "responses[0].times"),
        ([{"status": 500}, {"status": 200}], "responses[0].times"),
        ([{"status": 200, "delay_ms": -1}], "responses[0].delay_ms"),
        ([{"status": 200, "delay_ms": 10_000_000}], "responses[0].delay_ms"),
        ([{"status": 200, "colour": "red"}], "responses[0].colour"),
        ([{"status": 200, "headers": ["x"]}], "responses[0].headers"),
        ([{"status": 200, "headers": {"Bad Name": "x"}}], "responses[0].headers.Bad Name"),
        ([{"status": 200, "headers": {"X-A": "a\r\nb"}}], "responses[0].headers.X-A"),
        ([{"status": 200, "headers": {"Content-Length": "3"}}], "responses[0].headers.Content-Length"),
        # Served from qhook's origin, a script would pass the UI's script-src 'self'.
        (
            [{"status": 200, "headers": {"Content-Type": "text/javascript"}}],
            "responses[0].headers.Content-Type",
        ),
        (
            [{"status": 200, "headers": {"content-type": "Application/X-ECMAScript"}}],
            "responses[0].headers.content-type",
        ),
        ([{"status": 200, "headers": {"Content-Type": "text/css"}}], "responses[0].headers.Content-Type"),
        ([{"status": 200, "body": "x" * 70_000}], "responses[0].body"),
        ([{"status": 204, "body": "no"}], "responses[0].body"),
        ([1], "responses[0]"),
        ([{"times": 1}] * 51, "responses"),
    ],
)
def test_bad_scripts_name_the_field(script: object, field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        domain.parse_responses(script)
    assert caught.value.details[0]["field"] == field


def test_a_stored_script_type_is_left_out_when_served() -> None:
    """A bin scripted before such types were refused answers with the default type instead."""
    stored = [{"status": 200, "headers": {"Content-Type": "application/javascript", "X-A": "1"}, "body": "x"}]
    [step] = domain.steps_from_json(stored)
    assert step.headers == (("X-A", "1"),)


def test_script_round_trips_through_storage() -> None:
    steps = domain.parse_responses(
        [{"status": 500, "times": 3, "delay_ms": 10, "headers": {"X-A": 1}}, {"status": 200, "body": None}]
    )
    stored = domain.steps_to_json(steps)
    assert stored == [
        {"status": 500, "headers": {"X-A": "1"}, "delay_ms": 10, "times": 3},
        {"status": 200, "body": None},
    ]
    assert domain.steps_from_json(stored) == steps
    assert domain.steps_to_json(()) is None


@given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=6), st.integers(1, 40))
def test_nth_answer_follows_the_counts(counts: list[int], n: int) -> None:
    script = [{"status": 500 + i, "times": c} for i, c in enumerate(counts)]
    steps = domain.parse_responses(script)
    expected = 200
    total = 0
    for i, count in enumerate(counts):
        if n <= total + count:
            expected = 500 + i
            break
        total += count
    assert domain.answer_for(steps, n).status == expected


def test_bin_options_defaults_and_errors() -> None:
    options = domain.parse_bin_options(None, None, None, None)
    assert (options.ttl_days, options.max_captures, options.secret, options.steps) == (7, 500, None, ())
    secret = new_secret()
    assert domain.parse_bin_options(None, 1, 10, secret).secret == secret
    for args, field in [
        ((None, 0, None, None), "ttl_days"),
        ((None, 91, None, None), "ttl_days"),
        ((None, None, 0, None), "max_captures"),
        ((None, None, True, None), "max_captures"),
        ((None, None, None, "plain"), "secret"),
        ((None, None, None, "whsec_***"), "secret"),
    ]:
        with pytest.raises(ValidationFailed) as caught:
            domain.parse_bin_options(*args)
        assert caught.value.details[0]["field"] == field


def test_bin_url() -> None:
    assert domain.bin_url("https://q.example.com/", "abc") == "https://q.example.com/inspect/abc"
    assert domain.bin_url("http://testserver", "abc") == "http://testserver/inspect/abc"


def test_capture_headers_join_repeats_and_mask_credentials() -> None:
    headers = domain.capture_headers(
        [
            (b"X-Tag", b"a"),
            (b"x-tag", b"b"),
            (b"Authorization", b"Basic dXNlcjpwYXNz"),
            (b"X-Api-Key", b"s3cr3t"),
            (b"content-type", b"application/json"),
        ]
    )
    assert headers["x-tag"] == "a, b"
    assert headers["authorization"] == "Basic [redacted 12 characters]"
    assert headers["x-api-key"] == "[redacted 6 characters]"
    assert "dXNlcjpwYXNz" not in json.dumps(headers)
    assert headers["content-type"] == "application/json"


def test_body_for_display() -> None:
    assert domain.body_for_display('{"a": "é"}'.encode()) == ('{"a": "é"}', "utf-8")
    assert domain.body_for_display(b"\xff\x00") == ("/wA=", "base64")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://qhook.example.com/inspect/abc_DEF-1", True),
        ("https://qhook.example.com:443/inspect/abc/orders/7?x=1", True),
        ("https://QHOOK.example.com/inspect/abc", True),
        ("http://qhook.example.com/inspect/abc", False),  # another scheme is another origin
        ("https://qhook.example.com:8443/inspect/abc", False),
        ("https://qhook.example.com/api/v1/users", False),
        ("https://qhook.example.com/inspect/", False),
        ("https://qhook.example.com/inspect/abc/../../api/v1/users", False),
        ("https://qhook.example.com/inspect/abc/%2e%2e/%2e%2e/api", False),
        ("https://qhook.example.com/inspect/a%2fb", False),
        ("https://other.example.com/inspect/abc", False),
        ("http://127.0.0.1:8000/inspect/abc", True),
        ("http://localhost:8000/inspect/abc", True),
        ("http://127.0.0.1:8001/inspect/abc", False),
        ("http://10.0.0.1:8000/inspect/abc", False),
        ("ftp://127.0.0.1:8000/inspect/abc", False),
        ("http://127.0.0.1:bad/inspect/abc", False),
        ("not a url", False),
    ],
)
def test_is_own_inspector(url: str, expected: bool) -> None:
    settings = _settings(public_url="https://qhook.example.com", host="127.0.0.1", port=8000)
    assert domain.is_own_inspector(url, settings) is expected


def test_is_own_inspector_with_public_path_prefix_and_wildcard_host() -> None:
    settings = _settings(public_url="https://example.com/qhook/", host="0.0.0.0", port=9000)
    assert domain.is_own_inspector("https://example.com/qhook/inspect/abc", settings)
    assert not domain.is_own_inspector("https://example.com/inspect/abc", settings)
    assert domain.is_own_inspector("http://127.0.0.1:9000/inspect/abc", settings)
    assert domain.is_own_inspector("http://[::1]:9000/inspect/abc", settings)
    assert not domain.is_own_inspector("http://0.0.0.0:9000/inspect/abc", settings)


def test_is_own_inspector_without_public_url_uses_the_listening_host() -> None:
    settings = _settings(host="qhook.internal", port=8080)
    assert domain.is_own_inspector("http://qhook.internal:8080/inspect/abc", settings)
    assert not domain.is_own_inspector("http://127.0.0.1:8080/inspect/abc", settings)
