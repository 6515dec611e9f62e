"""Header names that carry credentials, and how qhook shows them: one list for every place that
shows or records headers (attempts, the Hub, the UI, the inspector, workflow documents)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from urllib.parse import unquote_plus

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


# Query parameters that carry a credential besides the header words above: Azure Functions'
# ``code``, SAS ``sig``, ``signature``, ``pwd``.
CREDENTIAL_QUERY_NAMES = frozenset({"code", "sig", "signature", "pass", "pwd", "pw"})


def is_credential_parameter(name: str) -> bool:
    return name.lower() in CREDENTIAL_QUERY_NAMES or is_credential(name)


def shown_url(url: str) -> str:
    """``url`` as qhook shows and logs it: the values of credential query parameters
    (``?code=...``, ``?api_key=...``) replaced by "[redacted]", everything else as stored.
    Receivers that take their key in the URL had it shown to every viewer of the workflow and
    the Hub. Sending uses the stored URL."""
    base, mark, rest = url.partition("?")
    if not mark:
        return url
    query, hash_mark, fragment = rest.partition("#")
    parts = []
    for part in query.split("&"):
        name, equals, _ = part.partition("=")
        if equals and is_credential_parameter(unquote_plus(name)):
            part = f"{name}={REDACTED}"
        parts.append(part)
    return f"{base}?{'&'.join(parts)}{hash_mark}{fragment}"


def restored_url(sent: str, stored: str) -> str:
    """A URL sent back as qhook showed it (credential values "[redacted]") is the stored one."""
    return stored if sent != stored and sent == shown_url(stored) else sent
