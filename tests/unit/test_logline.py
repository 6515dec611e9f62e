"""Log lines carry their ``extra`` context (the endpoint of "circuit opened", the reason of a
failed mail), and a traceback stays below its line."""

from __future__ import annotations

import logging
import sys

from qhook.logline import FORMAT, ContextFormatter


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("qhook.delivery.worker", logging.WARNING, __file__, 1, message, None, None)
    made.__dict__.update(extra)
    return made


def test_extra_fields_follow_the_message() -> None:
    line = ContextFormatter(FORMAT).format(
        record(
            "circuit opened",
            action="circuit_open",
            origin="https://erp.example.com:443",
            why="10 of 10 failed",
        )
    )
    assert line.endswith(
        "WARNING qhook.delivery.worker circuit opened action=circuit_open "
        "origin=https://erp.example.com:443 why='10 of 10 failed'"
    )


def test_a_plain_line_is_unchanged_and_a_traceback_stays_below() -> None:
    formatter = ContextFormatter(FORMAT)
    assert formatter.format(record("worker stopped")).endswith("WARNING qhook.delivery.worker worker stopped")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("tick failed", action="tick")
        failed.exc_info = sys.exc_info()
    first, _, rest = formatter.format(failed).partition("\n")
    assert first.endswith("tick failed action=tick")
    assert rest.startswith("Traceback") and rest.rstrip().endswith("ValueError: boom")
