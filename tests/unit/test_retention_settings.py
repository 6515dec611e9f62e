"""QHOOK_RETENTION_DAYS and QHOOK_FAILED_RETENTION_DAYS: 30 and 90 by default, read from the
environment, and at least one day (0 would purge deliveries as soon as they finish)."""

from __future__ import annotations

import pydantic
import pytest

from qhook.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QHOOK_RETENTION_DAYS", raising=False)
    monkeypatch.delenv("QHOOK_FAILED_RETENTION_DAYS", raising=False)


def test_defaults() -> None:
    settings = Settings()
    assert (settings.retention_days, settings.failed_retention_days) == (30, 90)


def test_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QHOOK_RETENTION_DAYS", "7")
    monkeypatch.setenv("QHOOK_FAILED_RETENTION_DAYS", "120")
    settings = Settings()
    assert (settings.retention_days, settings.failed_retention_days) == (7, 120)


@pytest.mark.parametrize("name", ["QHOOK_RETENTION_DAYS", "QHOOK_FAILED_RETENTION_DAYS"])
def test_zero_days_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "0")
    with pytest.raises(pydantic.ValidationError) as raised:
        Settings()
    assert name.removeprefix("QHOOK_").lower() in str(raised.value)
