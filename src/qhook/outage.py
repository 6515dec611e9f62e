"""While the database is away: how often to say so, and how long to wait between tries.

One line at the first failed try and then every twentieth (it was a line, or a traceback, many
times a second), and pauses that double up to a ceiling.
"""

from __future__ import annotations

SAY_EVERY = 20


def worth_saying(tries: int) -> bool:
    """Log the ``tries``-th failed try in a row?"""
    return tries == 1 or tries % SAY_EVERY == 0


def pause_s(tries: int, *, most_s: float = 15.0) -> float:
    """Seconds to wait after the ``tries``-th failed try in a row: 1, 2, 4, ... up to ``most_s``."""
    return min(0.5 * 2.0 ** min(tries, 6), most_s)
