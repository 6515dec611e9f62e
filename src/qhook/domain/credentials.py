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
    scheme, slashes, after = base.partition("://")
    authority, slash, path = after.partition("/")
    if slashes and "@" in authority:  # a legacy https://user:pass@host URL of an old delivery
        userinfo, _, host = authority.rpartition("@")
        if ":" in userinfo:
            authority = f"{userinfo.partition(':')[0]}:{REDACTED}@{host}"
        base = f"{scheme}{slashes}{authority}{slash}{path}"
    if not mark:
        return base
    query, hash_mark, fragment = rest.partition("#")
    parts = []
    for part in query.split("&"):
        name, equals, _ = part.partition("=")
        if equals and is_credential_parameter(unquote_plus(name)):
            part = f"{name}={REDACTED}"
        parts.append(part)
    return f"{base}?{'&'.join(parts)}{hash_mark}{fragment}"


def restored_url(sent: str, stored: str | None) -> str:
    """A URL sent back with credential query values "[redacted]", as qhook shows it: each such
    value is the stored one of the same parameter, while the URL keeps the stored one's scheme,
    host and port (a key must not follow the URL to a host its owner never chose). Anything else
    may change. Only the URL as a whole was restored: changing another parameter stored the text
    "[redacted]" as the key. ValueError when a "[redacted]" has no stored value to stand for."""
    if not has_redacted_value(sent):
        return sent
    base, _, rest = sent.partition("?")
    query, hash_mark, fragment = rest.partition("#")
    stored_base, _, stored_query = (stored or "").partition("?")
    if stored is None or _origin(base) != _origin(stored_base):
        raise ValueError(
            f"the key itself in place of {REDACTED} (a new URL or another host has no stored key)"
        )
    kept: dict[str, str] = {}
    for part in stored_query.partition("#")[0].split("&"):
        name, equals, value = part.partition("=")
        if equals:
            kept.setdefault(unquote_plus(name), value)
    parts = []
    for part in query.split("&"):
        name, equals, value = part.partition("=")
        if equals and value.lower() in (REDACTED.lower(), _ENCODED_REDACTED):
            original = kept.get(unquote_plus(name))
            if original is None or not is_credential_parameter(unquote_plus(name)):
                raise ValueError(f"the key itself in place of {REDACTED} in '{unquote_plus(name)}'")
            part = f"{name}={original}"
        parts.append(part)
    return f"{base}?{'&'.join(parts)}{hash_mark}{fragment}"


_ENCODED_REDACTED = "%5bredacted%5d"


def has_redacted_value(url: str) -> bool:
    """Whether a query value of ``url`` is the "[redacted]" qhook shows in place of a key."""
    query = url.partition("?")[2].partition("#")[0]
    return any(
        part.partition("=")[2].lower() in (REDACTED.lower(), _ENCODED_REDACTED) for part in query.split("&")
    )


def _origin(base: str) -> str:
    """scheme://host:port of a URL without its query, lower-cased (no path)."""
    scheme, _, rest = base.partition("://")
    return f"{scheme.lower()}://{rest.split('/', 1)[0].lower()}"
