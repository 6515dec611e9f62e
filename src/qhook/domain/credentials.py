"""Header names that carry credentials, and how qhook shows them: one list for every place that
shows or records headers (attempts, the Hub, the UI, the inspector, workflow documents)."""

from __future__ import annotations

import functools
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


# Words that make a header name a credential's: X-Functions-Key, Ocp-Apim-Subscription-Key,
# Private-Token, X-Hasura-Admin-Secret, X-Auth, Apikey, ... (the list above missed most vendors').
CREDENTIAL_WORDS = frozenset(
    {
        "key",
        "apikey",
        "token",
        "secret",
        "password",
        "passwd",
        "auth",
        "authorization",
        "authentication",
        "session",
        "cookie",
        "credential",
        "credentials",
        "bearer",
        "csrf",
    }
)


@functools.lru_cache(maxsize=4096)  # the same few names on every attempt (bounded memory)
def is_credential(name: str) -> bool:
    lowered = name.lower()
    if lowered in CREDENTIAL_HEADERS:
        return True
    return any(word in CREDENTIAL_WORDS for word in lowered.replace("_", "-").split("-"))


def redacted(headers: Mapping[str, str] | None, also: Iterable[str] = ()) -> dict[str, str]:
    """``headers`` with the values of credential headers (and of the names in ``also``, e.g. an
    auth profile's own header) replaced by "[redacted]"."""
    extra = {name.lower() for name in also}
    return {
        k: (REDACTED if is_credential(k) or k.lower() in extra else v) for k, v in (headers or {}).items()
    }
