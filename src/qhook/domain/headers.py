"""HTTP header names: which are well-formed, and which qhook sets itself on every webhook (a
signal's static headers and an auth profile's header may not replace them)."""

from __future__ import annotations

import re

RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
NAME_EXPECTED = "a header name: letters, digits and !#$%&'*+-.^_`|~, no spaces"


def is_name(name: object) -> bool:
    return isinstance(name, str) and bool(_NAME.match(name))


def is_reserved(name: str) -> bool:
    return name.lower() in RESERVED_HEADERS
