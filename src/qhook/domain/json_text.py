"""JSON text from outside (request bodies, parameters, rendered templates) read strictly.

The standard library's ``json.loads`` turns an escaped lone surrogate (``"\\ud800"``) into a
Python string that no UTF-8 encoder accepts: such a value passed every check and then failed
deep inside, as a 500 (PostgreSQL refusing the jsonb, orjson refusing to render the webhook
body). pydantic-core's parser refuses it where the text is read. A NUL character (``"\\u0000"``)
is refused too, naming where it is: PostgreSQL's text and jsonb cannot hold one (a 500 there),
while SQLite stored it, so the same request had two outcomes. So is an integer beyond 64 bits,
naming where it is: orjson and both databases hold 64 bits, and a longer one failed deep inside
(a 500 writing the event, or comparing a column with it). ``NaN`` and ``Infinity`` are no JSON and
are refused, and so is a number too large for a float (``1e309``), naming where it is: they were
stored, shown as ``null`` and refused when the same document came back. An object that names a key
twice is refused, naming it: ``json.loads`` keeps the last silently, so ``{"status_": "released",
"status_": "rejected"}`` stored whichever came last, and the sender never learnt. Otherwise it
reads what ``json.loads`` reads and gives the same values.

Errors are ``json.JSONDecodeError`` (a ValueError), as ``json.loads`` raises: every caller's
handler, and FastAPI's 422 for a request body, stay as they are.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable
from typing import Any

import pydantic_core

_WHERE = re.compile(r"^(?P<what>.*?) at line (?P<line>\d+) column (?P<column>\d+)$")
NUL_EXPECTED = "text without NUL characters (\\u0000)"
_NUL_IN = "a NUL character (\\u0000) in "
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
INT_EXPECTED = f"a whole number from {INT_MIN} to {INT_MAX}"
_BIG_IN = "a whole number beyond 64 bits in "
FINITE_EXPECTED = "a finite number (at most about 1.8e308)"
_HUGE_IN = "a number too large for a float in "
TWICE_EXPECTED = "each key at most once in an object"
_TWICE_IN = "a key given twice: "
# A float overflows only with an exponent of three digits or hundreds of digits.
_HUGE_NUMBER = re.compile(r"[eE][+]?\d{3}|\d{300}")
_HUGE_NUMBER_BYTES = re.compile(rb"[eE][+]?\d{3}|\d{300}")
# A JSON integer beyond 64 bits has at least 19 digits; shorter texts are never walked for one.
_LONG_NUMBER = re.compile(r"\d{19}")
_LONG_NUMBER_BYTES = re.compile(rb"\d{19}")


def loads(text: str | bytes, *, repeated_keys: bool = False) -> Any:
    """Parse ``text`` as JSON; ``json.JSONDecodeError`` naming the problem and its position.
    ``repeated_keys``: keep the last of a repeated key, as ``json.loads`` does (for text qhook
    made itself, such as a rendered body template, checked when the template was saved)."""
    try:
        value = pydantic_core.from_json(text, allow_inf_nan=False)
    except ValueError as exc:
        doc = _doc(text)
        what, position = _located(str(exc), doc)
        raise json.JSONDecodeError(what, doc, position) from exc
    # A NUL can only come as this escape (a raw control character is not JSON): one scan, and the
    # value is walked only when the escape is there (it may be an escaped backslash's "\\u0000").
    escaped = b"\\u0000" in text if isinstance(text, bytes) else "\\u0000" in text
    if escaped:
        path = nul_path(value)
        if path is not None:
            doc = _doc(text)
            raise json.JSONDecodeError(_NUL_IN + (path or "the value"), doc, doc.find("\\u0000"))
    # Every store and orjson hold integers of 64 bits at most: a longer one failed deep inside (a
    # 500 from orjson writing the event, or from the driver comparing a column with it).
    _refuse_number(text, value, _LONG_NUMBER, _LONG_NUMBER_BYTES, _beyond_64_bits, _BIG_IN)
    # A float too large for 64 bits came out as infinity: stored, and shown as null.
    _refuse_number(text, value, _HUGE_NUMBER, _HUGE_NUMBER_BYTES, _not_finite, _HUGE_IN)
    if not repeated_keys:
        _refuse_twice(text)
    return value


def _doc(text: str | bytes) -> str:
    return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text


def _refuse_number(
    text: str | bytes,
    value: Any,
    pattern: re.Pattern[str],
    pattern_bytes: re.Pattern[bytes],
    wrong: Callable[[object], bool],
    prefix: str,
) -> None:
    """The value is walked only when a cheap scan of the text finds a number that may be ``wrong``;
    the first wrong place is refused, naming it."""
    found = pattern_bytes.search(text) if isinstance(text, bytes) else pattern.search(text)
    if found is None:
        return
    path = _where(value, wrong, "")
    if path is not None:
        raise json.JSONDecodeError(prefix + (path or "the value"), _doc(text), found.start())


class _Twice(dict[str, Any]):
    """An object that named ``key`` more than once (only made to find where)."""

    key: str


def _refuse_twice(text: str | bytes) -> None:
    """A second reading by the standard library, which hands over every object's keys in order
    (pydantic-core keeps the last of a repeated key and says nothing): ~1 µs per object. The
    value is walked only when a key did repeat."""
    if b"{" not in text if isinstance(text, bytes) else "{" not in text:
        return
    repeated: list[str] = []  # the keys that repeated, in the order read

    def pairs_to_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found = dict(pairs)
        if len(found) == len(pairs):
            return found
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                break
            seen.add(key)
        repeated.append(key)
        twice = _Twice(found)
        twice.key = key
        return twice

    value = json.loads(text, object_pairs_hook=pairs_to_object)
    path = _twice_path(value, "") if repeated else None
    if path is not None:
        doc = _doc(text)
        # Where the key is written a second time as a key (best effort: an escaped spelling of it
        # is not found, and the position is then 0).
        as_key = re.compile(re.escape(json.dumps(repeated[0], ensure_ascii=False)) + r"\s*:")
        found = [m.start() for m in itertools.islice(as_key.finditer(doc), 2)]
        raise json.JSONDecodeError(_TWICE_IN + path, doc, found[1] if len(found) > 1 else 0)


def _twice_path(value: Any, path: str) -> str | None:
    """The path of the first repeated key, as ``results.3.status_``; None when there is none."""
    if isinstance(value, _Twice):
        return f"{path}.{value.key}" if path else value.key
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _twice_path(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def _not_finite(value: object) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def nul_path(value: Any, path: str = "") -> str | None:
    """Where in ``value`` a string (or a key) holds a NUL, as ``a.b.0.c``; None when nowhere."""
    return _where(value, _holds_nul, path)


def _beyond_64_bits(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX


def _holds_nul(value: object) -> bool:
    return isinstance(value, str) and "\x00" in value


def _where(value: Any, wrong: Callable[[object], bool], path: str) -> str | None:
    """The path of the first key or value in ``value`` (walked depth first) that is ``wrong``."""
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if wrong(key):
                return inner
            found = _where(item, wrong, inner)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _where(item, wrong, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    elif wrong(value):
        return path
    return None


def without_nul(text: str) -> str:
    """``text`` with each NUL as U+FFFD: what PostgreSQL can store, or show in a message naming it."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def refused(message: str) -> tuple[str, str] | None:
    """(the place, what was expected there) for a value ``loads`` refused although the text is JSON
    (a NUL, an integer beyond 64 bits, a key given twice); None for text that is not JSON."""
    for prefix, expected in (
        (_NUL_IN, NUL_EXPECTED),
        (_BIG_IN, INT_EXPECTED),
        (_HUGE_IN, FINITE_EXPECTED),
        (_TWICE_IN, TWICE_EXPECTED),
    ):
        if message.startswith(prefix):
            return message.removeprefix(prefix), expected
    return None


def _located(message: str, doc: str) -> tuple[str, int]:
    """pydantic-core says "... at line L column C"; JSONDecodeError wants a character offset."""
    found = _WHERE.match(message)
    if found is None:
        return message, 0
    lines = doc.split("\n")
    line = min(int(found["line"]), len(lines))
    offset = sum(len(text) + 1 for text in lines[: line - 1]) + int(found["column"]) - 1
    return found["what"], min(max(offset, 0), len(doc))
