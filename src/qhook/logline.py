"""One log line per event with its context: ``extra={...}`` fields are printed as ``key=value``.

The plain format printed only the message, so "circuit opened" never said which endpoint.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Everything a LogRecord carries by itself; the rest came in through ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class ContextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{key}={_text(value)}" for key, value in vars(record).items() if key not in _STANDARD
        )
        if not context:
            return line
        first, newline, rest = line.partition("\n")  # a traceback stays below the line
        return f"{first} {context}{newline}{rest}"


def _text(value: object) -> str:
    text = str(value)
    return repr(text) if not text or any(c.isspace() for c in text) else text


def configure(level: str) -> None:
    """The root logger for ``qhook serve`` and ``qhook worker``."""
    handler = logging.StreamHandler()
    handler.setFormatter(ContextFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
