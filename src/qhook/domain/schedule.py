"""When an on_date trigger comes due for one result: date or date-time field plus an ISO offset."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import isodate

from qhook.domain.triggers import OnDate


@functools.lru_cache(maxsize=256)
def offset_of(text: str) -> timedelta | isodate.Duration:
    """An ISO 8601 duration; months and years come back as ``isodate.Duration`` (kept: a workflow's
    offset is read again for every result it schedules)."""
    parsed: timedelta | isodate.Duration = isodate.parse_duration(text)
    return parsed


def _date_value(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and value.strip():
        return date.fromisoformat(value.strip()[:10])
    return None


def _datetime_value(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "T", 1)
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    else:
        return None
    # Stored and presented date-times are UTC; a naive one is read as UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def due_at(on_date: OnDate, value: Any, timezone: str) -> datetime | None:
    """The UTC moment the trigger fires for a field holding ``value``; None when it is empty, or
    when that moment falls outside the years 1 to 9999 (it never comes: the result is stored and
    not scheduled, where the date arithmetic's OverflowError was a 500).

    A date field fires at local time ``at`` in ``timezone`` on the date plus the offset; the offset
    is applied on the wall clock, so "-P7D at 08:00" is 08:00 local even across a DST change. A
    date-time field fires at the exact instant plus the offset. Raises ValueError for a value that
    is not a date.
    """
    try:
        return _due_at(on_date, value, timezone)
    except OverflowError:
        return None


def _due_at(on_date: OnDate, value: Any, timezone: str) -> datetime | None:
    offset = offset_of(on_date.offset)
    if on_date.field_type == "datetime":
        moment = _datetime_value(value)
        if moment is None:
            return None
        shifted: datetime = moment + offset
        return shifted.astimezone(UTC)
    day = _date_value(value)
    if day is None:
        return None
    local = datetime.combine(day, on_date.at) + offset  # naive: wall-clock arithmetic
    # fold=0: an ambiguous local time (autumn) is its first occurrence; a missing one (spring)
    # maps forward by the gap, which zoneinfo does for fold=0.
    return local.replace(tzinfo=ZoneInfo(timezone)).astimezone(UTC)


def local_time(moment: datetime, timezone: str) -> time:
    """The wall-clock time of a UTC moment in ``timezone`` (for tests and display)."""
    return moment.astimezone(ZoneInfo(timezone)).time()


@dataclass(frozen=True, slots=True)
class Kept:
    """A result's schedule row as it stands: its due time, when it fired (None: waiting), its zone."""

    due_at: datetime
    fired_at: datetime | None
    timezone: str | None


@dataclass(frozen=True, slots=True)
class Change:
    """What a new due time does to a result's row: ``insert`` one, ``move`` it (to ``due_at``, with
    ``fired_at``), or only record the ``zone`` it was computed in."""

    kind: Literal["insert", "move", "zone"]
    fired_at: datetime | None = None


def change_for(
    current: Kept | None, due: datetime, now: datetime, timezone: str, *, fire_past: bool
) -> Change | None:
    """One row per (workflow, result), due in ``timezone`` (QHOOK_TIMEZONE). An unchanged due time
    never fires twice; one moved into the future fires again then; one that already fired and moves
    to a time already past (a new offset or ``at`` on the workflow, an earlier date) does not fire
    again. Without ``fire_past`` (the result changed, but not its date), a result with no row and a
    due time already past gets none (the past is not replayed), and a row that fired stays fired
    although its time moved (computed in another QHOOK_TIMEZONE: it was sent again). None: nothing
    to write."""
    if current is None:
        return None if due <= now and not fire_past else Change("insert")
    if current.due_at != due:
        keep = current.fired_at is not None and (due <= now or not fire_past)
        return Change("move", current.fired_at if keep else None)
    if current.timezone != timezone:
        return Change("zone")
    return None
