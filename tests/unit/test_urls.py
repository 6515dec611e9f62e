"""Target URL validation, legacy credentials, origins and host patterns."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qhook.domain import urls
from qhook.errors import ValidationFailed


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://erp.example.com/api/batches", "https://erp.example.com:443"),
        ("https://ERP.Example.com:8443/x?y=1", "https://erp.example.com:8443"),
        ("http://127.0.0.1/hook", "http://127.0.0.1:80"),
        ("http://[::1]:9000/hook", "http://[::1]:9000"),
        ("https://user:pw@erp.example.com/", "https://erp.example.com:443"),
        ("https://bücher.example/", "https://xn--bcher-kva.example:443"),
    ],
)
def test_origin_of(url: str, origin: str) -> None:
    assert urls.origin_of(url) == origin
    assert urls.origin_or_none(url) == origin


@pytest.mark.parametrize("stored", [None, 42, {"url": "https://x"}, "https://erp.example.com:99999/"])
def test_origin_or_none_of_what_is_no_url(stored: object) -> None:
    assert urls.origin_or_none(stored) is None


def test_parse_target_https() -> None:
    target = urls.parse_target("https://erp.example.com/api/batches?plant=venlo#frag", allow_http=False)
    assert target.url == "https://erp.example.com/api/batches?plant=venlo"
    assert target.origin == "https://erp.example.com:443"
    assert (target.host, target.port, target.scheme) == ("erp.example.com", 443, "https")
    assert not target.has_legacy_credentials


def test_http_only_when_allowed() -> None:
    with pytest.raises(ValidationFailed) as info:
        urls.parse_target("http://erp.example.com/", allow_http=False)
    assert info.value.details == [{"field": "url", "error": "an https:// URL (QHOOK_ALLOW_HTTP is off)"}]
    assert urls.parse_target("http://erp.example.com", allow_http=True).url == "http://erp.example.com/"


def test_legacy_userinfo_split_out() -> None:
    target = urls.parse_target("https://api%40erp:p%3Ass@erp.example.com:8443/in", allow_http=False)
    assert target.url == "https://erp.example.com:8443/in"
    assert (target.username, target.password) == ("api@erp", "p:ss")
    assert "p:ss" not in target.url and "erp:" not in target.url


def test_userinfo_refused_when_not_allowed() -> None:
    with pytest.raises(ValidationFailed) as info:
        urls.parse_target("https://u:p@erp.example.com/", allow_http=False, allow_userinfo=False, field="x")
    assert info.value.details[0]["field"] == "x"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "ftp://erp.example.com/",
        "erp.example.com/x",
        "https:///path",
        "https://host:99999/",
        "https://exa mple.com/",
        "javascript:alert(1)",
        "https://" + "a" * 3000 + ".com/",
    ],
)
def test_bad_urls(bad: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        urls.parse_target(bad, allow_http=True)
    assert info.value.details[0]["field"] == "url"
    assert not urls.is_valid_target(bad, allow_http=True)


def test_host_of() -> None:
    assert urls.host_of("https://ERP.example.com:8443/x") == "erp.example.com"
    assert urls.host_of("not a url") == ""


@pytest.mark.parametrize(
    ("host", "pattern", "matches"),
    [
        ("erp.example.com", "erp.example.com", True),
        ("ERP.example.com", "erp.example.com.", True),
        ("api.example.com", "*.example.com", True),
        ("a.b.example.com", "*.example.com", True),
        ("example.com", "*.example.com", False),
        ("evilexample.com", "*.example.com", False),
        ("erp.example.com.evil.org", "erp.example.com", False),
        ("other.example.com", "erp.example.com", False),
    ],
)
def test_host_matches(host: str, pattern: str, matches: bool) -> None:
    assert urls.host_matches(host, pattern) is matches


@pytest.mark.parametrize(
    ("pattern", "split"),
    [
        ("erp.example.com", ("erp.example.com", None)),
        (" ERP.example.com.:8443 ", ("erp.example.com", 8443)),
        ("*.example.com:443", ("*.example.com", 443)),
        ("::1", ("::1", None)),
        ("[::1]:8443", ("::1", 8443)),
        ("[::1]", ("::1", None)),
        ("erp.example.com:0", None),
        ("erp.example.com:65536", None),
        ("erp.example.com:", None),
        ("erp.example.com:\uff18\uff10", None),  # full-width digits: str.isdigit says yes
        ("[::1]8443", None),
        ("[::1", None),
    ],
)
def test_split_pattern(pattern: str, split: tuple[str, int | None] | None) -> None:
    assert urls.split_pattern(pattern) == split


@pytest.mark.parametrize(
    ("url", "pattern", "matches"),
    [
        ("https://erp.example.com/x", "erp.example.com", True),
        ("https://erp.example.com:8443/x", "erp.example.com", True),
        ("https://erp.example.com/x", "erp.example.com:443", True),
        ("http://erp.example.com/x", "erp.example.com:443", False),
        ("https://erp.example.com:8443/x", "erp.example.com:443", False),
        ("https://a.example.com:8443/x", "*.example.com:8443", True),
        ("https://[::1]:8443/x", "[::1]:8443", True),
        ("https://[::1]/x", "::1", True),
        ("https://erp.example.com:99999/x", "erp.example.com", False),  # not a port: no match
        ("not a url", "erp.example.com", False),
    ],
)
def test_url_matches(url: str, pattern: str, matches: bool) -> None:
    assert urls.url_matches(url, pattern) is matches


@given(st.text(max_size=60))
def test_parse_target_only_raises_validation_errors(text: str) -> None:
    try:
        target = urls.parse_target(text, allow_http=True)
    except ValidationFailed:
        return
    assert target.scheme in ("http", "https") and target.host
    assert urls.origin_of(target.url) == target.origin
