"""Which header names carry credentials: the list, and the words that make a vendor's name one."""

from __future__ import annotations

import pytest

from qhook.domain import credentials
from qhook.domain.credentials import is_credential, redacted


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "X-API-KEY",
        "Cookie",
        "X-Functions-Key",
        "Ocp-Apim-Subscription-Key",
        "X-Goog-Api-Key",
        "Private-Token",
        "X-Hasura-Admin-Secret",
        "X-Amz-Security-Token",
        "X-Auth",
        "Apikey",
        "X-Apikey",
        "Authentication",
        "X-Client-Secret",
        "X-Session-Token",
        "x_api_key",
    ],
)
def test_credential_names(name: str) -> None:
    assert is_credential(name)


@pytest.mark.parametrize(
    "name", ["Content-Type", "X-Plant", "Keep-Alive", "X-Request-Id", "Accept-Language", "X-Monkey-Id"]
)
def test_other_names(name: str) -> None:
    assert not is_credential(name)


def test_redacted_covers_words_and_named_extras() -> None:
    headers = {"X-Functions-Key": "fk-1", "X-Plant": "Delft", "X-Custom": "c"}
    assert redacted(headers, also={"x-custom"}) == {
        "X-Functions-Key": "[redacted]",
        "X-Plant": "Delft",
        "X-Custom": "[redacted]",
    }


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://f.azurewebsites.net/api/x?code=K1==&name=a",
            "https://f.azurewebsites.net/api/x?code=[redacted]&name=a",
        ),
        (
            "https://erp/h?api_key=K&access_token=T&sig=S&plant=Venlo",
            "https://erp/h?api_key=[redacted]&access_token=[redacted]&sig=[redacted]&plant=Venlo",
        ),
        ("https://erp/h?Api%5FKey=K", "https://erp/h?Api%5FKey=[redacted]"),
        ("https://erp/h?token", "https://erp/h?token"),  # no value to hide
        ("https://erp/h?plant=Venlo&batch=B-1", "https://erp/h?plant=Venlo&batch=B-1"),
        ("https://erp/h", "https://erp/h"),
        (
            "https://qc:pw1@erp.example.com/h?code=K",
            "https://qc:[redacted]@erp.example.com/h?code=[redacted]",
        ),
        ("https://qc@erp.example.com/h", "https://qc@erp.example.com/h"),
    ],
)
def test_credential_query_values_are_shown_redacted(url: str, shown: str) -> None:
    assert credentials.shown_url(url) == shown
    if "@" not in url:  # a user:pass@ URL is never stored for a signal (the pair goes to a profile)
        assert credentials.restored_url(shown, url) == url  # sent back as shown: the stored one
    assert credentials.restored_url("https://other/h", url) == "https://other/h"


def test_a_redacted_key_is_restored_by_parameter_while_the_host_stays() -> None:
    """Only the URL as a whole came back: changing another parameter stored "[redacted]" as the key."""
    stored = "https://erp.example.com/hook?code=K1&plant=Venlo"
    assert credentials.restored_url("https://erp.example.com/hook?code=[redacted]&plant=Delft", stored) == (
        "https://erp.example.com/hook?code=K1&plant=Delft"
    )
    assert credentials.restored_url("https://erp.example.com/v2/hook?code=%5Bredacted%5D", stored) == (
        "https://erp.example.com/v2/hook?code=K1"
    )
    for refused in (
        "https://evil.example.net/hook?code=[redacted]",  # the key must not follow to another host
        "https://erp.example.com/hook?api_key=[redacted]",  # no stored value to stand for
        "https://erp.example.com/hook?plant=[redacted]",  # not a credential parameter
    ):
        with pytest.raises(ValueError, match="the key itself"):
            credentials.restored_url(refused, stored)
    with pytest.raises(ValueError):
        credentials.restored_url("https://erp.example.com/hook?code=[redacted]", None)
    assert credentials.has_redacted_value("https://e/h?code=[redacted]")
    assert not credentials.has_redacted_value("https://e/h?note=[redacted]x")
