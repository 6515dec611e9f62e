"""Header names that carry credentials, and how qhook shows them: one list for every place that
shows or records headers (attempts, the Hub, the UI, the inspector, workflow documents)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-access-token",
    }
)
REDACTED = "[redacted]"


def is_credential(name: str) -> bool:
    return name.lower() in CREDENTIAL_HEADERS


def redacted(headers: Mapping[str, str] | None, also: Iterable[str] = ()) -> dict[str, str]:
    """``headers`` with the values of credential headers (and of the names in ``also``, e.g. an
    auth profile's own header) replaced by "[redacted]"."""
    extra = {name.lower() for name in also}
    return {
        k: (REDACTED if k.lower() in CREDENTIAL_HEADERS or k.lower() in extra else v)
        for k, v in (headers or {}).items()
    }
