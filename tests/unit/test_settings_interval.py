"""QHOOK_ERROR_MAIL_INTERVAL: the documented name, in seconds or as an ISO 8601 duration, with the
older QHOOK_ERROR_MAIL_INTERVAL_S still read."""

from __future__ import annotations

import pydantic
import pytest

from qhook.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QHOOK_ERROR_MAIL_INTERVAL", raising=False)
    monkeypatch.delenv("QHOOK_ERROR_MAIL_INTERVAL_S", raising=False)


def test_default_is_fifteen_minutes() -> None:
    assert Settings().error_mail_interval == 900
    assert Settings().error_mail_interval_s == 900


@pytest.mark.parametrize(("text", "seconds"), [("600", 600), ("PT15M", 900), ("pt1h", 3600), ("PT90S", 90)])
def test_the_documented_name_takes_seconds_or_a_duration(
    monkeypatch: pytest.MonkeyPatch, text: str, seconds: int
) -> None:
    monkeypatch.setenv("QHOOK_ERROR_MAIL_INTERVAL", text)
    assert Settings().error_mail_interval == seconds


def test_the_old_name_is_an_alias_and_the_new_one_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QHOOK_ERROR_MAIL_INTERVAL_S", "120")
    assert Settings().error_mail_interval == 120
    monkeypatch.setenv("QHOOK_ERROR_MAIL_INTERVAL", "PT5M")
    assert Settings().error_mail_interval == 300


@pytest.mark.parametrize("text", ["fifteen", "PT", "P1M", "0", "-5", "PT0S"])
def test_nonsense_is_refused_at_load(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("QHOOK_ERROR_MAIL_INTERVAL", text)
    with pytest.raises(pydantic.ValidationError):
        Settings()


def test_by_field_name_in_code() -> None:
    assert Settings(error_mail_interval=42).error_mail_interval_s == 42
