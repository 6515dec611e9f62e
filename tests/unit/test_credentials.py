"""Which header names carry credentials: the list, and the words that make a vendor's name one."""

from __future__ import annotations

import pytest

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
