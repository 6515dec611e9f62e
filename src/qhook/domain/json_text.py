"""JSON text from outside (request bodies, parameters, rendered templates) read strictly.

The standard library's ``json.loads`` turns an escaped lone surrogate (``"\\ud800"``) into a
Python string that no UTF-8 encoder accepts: such a value passed every check and then failed
deep inside, as a 500 (PostgreSQL refusing the jsonb, orjson refusing to render the webhook
body). pydantic-core's parser refuses it where the text is read. Otherwise it reads what
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


def loads(text: str | bytes) -> Any:
    """Parse ``text`` as JSON; ``json.JSONDecodeError`` naming the problem and its position."""
    try:
        return pydantic_core.from_json(text)
    except ValueError as exc:
        doc = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
        what, position = _located(str(exc), doc)
        raise json.JSONDecodeError(what, doc, position) from exc


def _located(message: str, doc: str) -> tuple[str, int]:
    """pydantic-core says "... at line L column C"; JSONDecodeError wants a character offset."""
    found = _WHERE.match(message)
    if found is None:
        return message, 0
    lines = doc.split("\n")
    line = min(int(found["line"]), len(lines))
    offset = sum(len(text) + 1 for text in lines[: line - 1]) + int(found["column"]) - 1
    return found["what"], min(max(offset, 0), len(doc))
