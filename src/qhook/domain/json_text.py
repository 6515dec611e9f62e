"""JSON text from outside (request bodies, parameters, rendered templates) read strictly.

The standard library's ``json.loads`` turns an escaped lone surrogate (``"\\ud800"``) into a
Python string that no UTF-8 encoder accepts: such a value passed every check and then failed
deep inside, as a 500 (PostgreSQL refusing the jsonb, orjson refusing to render the webhook
body). pydantic-core's parser refuses it where the text is read. A NUL character (``"\\u0000"``)
is refused too, naming where it is: PostgreSQL's text and jsonb cannot hold one (a 500 there),
while SQLite stored it, so the same request had two outcomes. Otherwise it reads what
``json.loads`` reads and gives the same values: big integers stay exact, ``NaN`` and
``Infinity`` are read, the last of duplicate keys wins.

Errors are ``json.JSONDecodeError`` (a ValueError), as ``json.loads`` raises: every caller's
handler, and FastAPI's 422 for a request body, stay as they are.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pydantic_core

_WHERE = re.compile(r"^(?P<what>.*?) at line (?P<line>\d+) column (?P<column>\d+)$")
NUL_EXPECTED = "text without NUL characters (\\u0000)"
_NUL_IN = "a NUL character (\\u0000) in "


def loads(text: str | bytes) -> Any:
    """Parse ``text`` as JSON; ``json.JSONDecodeError`` naming the problem and its position."""
    try:
        value = pydantic_core.from_json(text)
    except ValueError as exc:
        doc = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
        what, position = _located(str(exc), doc)
        raise json.JSONDecodeError(what, doc, position) from exc
    # A NUL can only come as this escape (a raw control character is not JSON): one scan, and the
    # value is walked only when the escape is there (it may be an escaped backslash's "\\u0000").
    escaped = b"\\u0000" in text if isinstance(text, bytes) else "\\u0000" in text
    if escaped:
        path = nul_path(value)
        if path is not None:
            doc = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
            raise json.JSONDecodeError(_NUL_IN + (path or "the value"), doc, doc.find("\\u0000"))
    return value


def nul_path(value: Any, path: str = "") -> str | None:
    """Where in ``value`` a string (or a key) holds a NUL, as ``a.b.0.c``; None when nowhere."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return inner
            found = nul_path(item, inner)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_path(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def without_nul(text: str) -> str:
    """``text`` with each NUL as U+FFFD: what PostgreSQL can store, or show in a message naming it."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def nul_field(message: str) -> str | None:
    """The place named by a NUL refusal of ``loads`` (its message), or None for other errors."""
    return message.removeprefix(_NUL_IN) if message.startswith(_NUL_IN) else None


def _located(message: str, doc: str) -> tuple[str, int]:
    """pydantic-core says "... at line L column C"; JSONDecodeError wants a character offset."""
    found = _WHERE.match(message)
    if found is None:
        return message, 0
    lines = doc.split("\n")
    line = min(int(found["line"]), len(lines))
    offset = sum(len(text) + 1 for text in lines[: line - 1]) + int(found["column"]) - 1
    return found["what"], min(max(offset, 0), len(doc))
