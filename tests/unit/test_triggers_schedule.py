"""Trigger validation and matching; on-date due times across month ends and DST (hypothesis)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qhook.domain.fields import FieldDef
from qhook.domain.schedule import Change, Kept, change_for, due_at
from qhook.domain.triggers import OnDate, Triggers, match, parse_offset, parse_triggers, triggers_from_json
from qhook.errors import ValidationFailed

FIELDS = [
    FieldDef(1, "status_", "Status", "text", False, True, 1),
    FieldDef(2, "ph_", "pH", "number", False, True, 2),
    FieldDef(3, "expiry_", "Expiry", "date", False, True, 3),
    FieldDef(4, "tested_", "Tested", "datetime", False, True, 4),
]


def test_absent_or_false_is_off() -> None:
    triggers = parse_triggers({"entry": True, "deletion": False}, FIELDS)
    assert triggers == Triggers(entry=True)
    assert match(triggers, "new", {}) == (True, "trigger: entry")
    assert match(triggers, "deleted", {})[0] is False
    assert match(triggers, "modified", {"ph_": {}})[1] == "trigger: modification is off"


def test_modification_any_or_limited() -> None:
    for raw in (True, {}, {"fields": []}):
        triggers = parse_triggers({"modification": raw}, FIELDS)
        assert match(triggers, "modified", {"ph_": {"old": 1, "new": 2}})[0]
        assert match(triggers, "modified", {}) == (False, "trigger: modification, but nothing changed")
    limited = parse_triggers({"modification": {"fields": ["status_"]}}, FIELDS)
    assert match(limited, "modified", {"ph_": {}}) == (
        False,
        "trigger: modification limited to status_, changed: ph_",
    )
    assert match(limited, "modified", {"status_": {}, "ph_": {}})[0]


def test_manual_only_and_kinds() -> None:
    manual = parse_triggers({"manual": True}, FIELDS)
    assert match(manual, "new", {}) == (False, "manual only")
    assert match(manual, "manual", {}) == (True, "trigger: manual")
    on_date = parse_triggers({"on_date": {"field": "expiry_", "offset": "-P7D", "at": "08:00"}}, FIELDS)
    assert on_date.on_date == OnDate("expiry_", "-P7D", time(8, 0), "date")
    assert match(on_date, "date", {})[0]
    assert not match(on_date, "manual", {})[0]
    assert match(Triggers(), "new", {}) == (False, "no trigger is on")


def test_json_round_trip() -> None:
    raw = {
        "entry": True,
        "modification": {"fields": ["status_"]},
        "deletion": True,
        "manual": False,
        "on_date": {"field": "tested_", "offset": "PT1H", "at": "00:00"},
    }
    parsed = parse_triggers(raw, FIELDS)
    assert parsed.as_json() == raw
    assert triggers_from_json(parsed.as_json(), {"tested_": "datetime"}) == parsed
    assert parsed.actions == {"new", "modified", "deleted", "date"}


@pytest.mark.parametrize(
    ("raw", "place"),
    [
        ({"entry": "yes"}, "triggers.entry"),
        ({"sometimes": True}, "triggers.sometimes"),
        ({"modification": {"fields": ["nope_"]}}, "triggers.modification.fields[0]"),
        ({"modification": 3}, "triggers.modification"),
        ({"modification": {"fields": ["status_", ["a"]]}}, "triggers.modification.fields[1]"),
        ({"modification": {"fields": [{"a": 1}]}}, "triggers.modification.fields[0]"),
        ({"on_date": {"field": "expiry_", "offset": "PT"}}, "triggers.on_date.offset"),
        ({"on_date": {"field": "expiry_", "offset": "-P"}}, "triggers.on_date.offset"),
        ({"on_date": {"field": "ph_", "offset": "P1D"}}, "triggers.on_date.field"),
        ({"on_date": {"field": "expiry_", "offset": "seven days"}}, "triggers.on_date.offset"),
        ({"on_date": {"field": "expiry_", "offset": "P1D", "at": "25:00"}}, "triggers.on_date.at"),
    ],
)
def test_invalid_triggers(raw: dict[str, object], place: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_triggers(raw, FIELDS)
    assert caught.value.details[0]["field"] == place


# --- schedule -----------------------------------------------------------------------------------


def test_date_field_examples() -> None:
    rule = OnDate("expiry_", "-P7D", time(8, 0), "date")
    assert due_at(rule, "2025-10-10", "UTC") == datetime(2025, 10, 3, 8, 0, tzinfo=UTC)
    assert due_at(rule, "2025-10-10", "Europe/Amsterdam") == datetime(2025, 10, 3, 6, 0, tzinfo=UTC)
    # Across the autumn DST change: 08:00 local is still 08:00 local (UTC+1 after it).
    assert due_at(rule, "2025-11-01", "Europe/Amsterdam") == datetime(2025, 10, 25, 6, 0, tzinfo=UTC)
    assert due_at(rule, "2025-11-03", "Europe/Amsterdam") == datetime(2025, 10, 27, 7, 0, tzinfo=UTC)
    month = OnDate("expiry_", "-P1M", time(0, 0), "date")
    assert due_at(month, "2025-03-31", "UTC") == datetime(2025, 2, 28, tzinfo=UTC)
    assert due_at(month, None, "UTC") is None
    assert due_at(month, "", "UTC") is None


def test_datetime_field_is_exact() -> None:
    rule = OnDate("tested_", "PT2H", time(8, 0), "datetime")
    assert due_at(rule, "2025-10-01 08:00:00", "Europe/Amsterdam") == datetime(2025, 10, 1, 10, tzinfo=UTC)
    assert due_at(rule, "2025-10-01T08:00:00Z", "UTC") == datetime(2025, 10, 1, 10, tzinfo=UTC)
    month = OnDate("tested_", "P1M", time(0, 0), "datetime")
    assert due_at(month, "2025-01-31T12:00:00Z", "UTC") == datetime(2025, 2, 28, 12, tzinfo=UTC)


ZONES = ["UTC", "Europe/Amsterdam", "America/New_York", "Australia/Sydney", "Asia/Kolkata"]


@given(
    day=st.dates(min_value=date(2000, 1, 1), max_value=date(2060, 12, 31)),
    days=st.integers(min_value=-400, max_value=400),
    hour=st.integers(min_value=0, max_value=23),
    minute=st.sampled_from([0, 15, 30, 45]),
    zone=st.sampled_from(ZONES),
)
def test_date_offsets_land_on_local_time(day: date, days: int, hour: int, minute: int, zone: str) -> None:
    offset = f"-P{-days}D" if days < 0 else f"P{days}D"
    due = due_at(OnDate("expiry_", offset, time(hour, minute), "date"), day.isoformat(), zone)
    assert due is not None and due.tzinfo is not None
    local = due.astimezone(ZoneInfo(zone))
    target = day + timedelta(days=days)
    wall = datetime.combine(target, time(hour, minute))
    # The wall-clock time is kept exactly, except inside a spring-forward gap, where it moves
    # forward by the gap (never more than 2 hours, never to another day before the target).
    shift = local.replace(tzinfo=None) - wall
    assert timedelta(0) <= shift <= timedelta(hours=2)
    if shift == timedelta(0):
        assert local.date() == target and local.time() == time(hour, minute)


@given(
    day=st.dates(min_value=date(2000, 1, 1), max_value=date(2060, 12, 31)),
    months=st.integers(min_value=-24, max_value=24),
)
def test_month_offsets_clamp_to_month_end(day: date, months: int) -> None:
    offset = f"-P{-months}M" if months < 0 else f"P{months}M"
    due = due_at(OnDate("expiry_", offset, time(0, 0), "date"), day.isoformat(), "UTC")
    assert due is not None
    index = day.year * 12 + day.month - 1 + months
    assert (due.year, due.month) == (index // 12, index % 12 + 1)
    assert due.day == day.day or (due.day < day.day and (due + timedelta(days=1)).day == 1)


@given(
    moment=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(UTC)
    ),
    seconds=st.integers(min_value=-(10**8), max_value=10**8),
    zone=st.sampled_from(ZONES),
)
def test_datetime_offsets_are_exact_whatever_the_zone(moment: datetime, seconds: int, zone: str) -> None:
    moment = moment.replace(microsecond=0)
    offset = f"-PT{-seconds}S" if seconds < 0 else f"PT{seconds}S"
    due = due_at(
        OnDate("tested_", offset, time(8, 0), "datetime"), moment.strftime("%Y-%m-%d %H:%M:%S"), zone
    )
    assert due == moment + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("field_type", "value", "offset", "zone"),
    [
        ("date", "9999-12-31", "P1D", "UTC"),
        ("date", "0001-01-01", "-P1D", "UTC"),
        ("date", "0001-01-01", "PT0S", "Europe/Amsterdam"),  # local midnight is still year 0 in UTC
        ("datetime", "9999-12-31 23:59:59", "PT1H", "UTC"),
        ("datetime", "0001-01-01 00:30:00", "-PT1H", "UTC"),
    ],
)
def test_a_moment_beyond_the_calendar_never_comes(
    field_type: str, value: str, offset: str, zone: str
) -> None:
    # The date arithmetic raised OverflowError: a 500 for the result (or the workflow) being saved.
    on_date = OnDate(field="d_", offset=offset, at=time(0, 0), field_type=field_type)
    assert due_at(on_date, value, zone) is None


def test_a_moment_near_the_calendar_edge_still_comes() -> None:
    on_date = OnDate(field="d_", offset="P1D", at=time(8, 0), field_type="date")
    assert due_at(on_date, "9999-12-30", "UTC") == datetime(9999, 12, 31, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize("offset", ["P101Y", "P99999999Y", "-P9999Y", "P36526D", "PT900000H"])
def test_an_on_date_offset_beyond_a_century_is_refused(offset: str) -> None:
    """'P9999Y' was accepted and then never scheduled, without a word anywhere."""
    with pytest.raises(ValidationFailed) as refused:
        parse_offset(offset, "triggers.on_date.offset")
    assert refused.value.details[0] == {
        "field": "triggers.on_date.offset",
        "error": f"a duration of at most 100 years either way, got {offset!r}",
    }
    assert parse_offset("-P100Y", "x") == "-P100Y" and parse_offset("P36525D", "x") == "P36525D"


NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
PAST = NOW - timedelta(days=1)
LATER = NOW + timedelta(days=1)


@pytest.mark.parametrize(
    ("current", "due", "fire_past", "expected"),
    [
        (None, LATER, False, Change("insert")),
        (None, PAST, True, Change("insert")),  # a result entered with a past due time fires it
        (None, PAST, False, None),  # an unrelated edit does not replay the past
        (Kept(LATER, None, "UTC"), LATER, True, None),  # unchanged: never fires twice
        (Kept(LATER, None, "UTC"), LATER + timedelta(hours=1), True, Change("move")),
        (Kept(PAST, PAST, "UTC"), PAST - timedelta(hours=1), True, Change("move", PAST)),  # stays fired
        (Kept(PAST, PAST, "UTC"), LATER, True, Change("move")),  # into the future: fires again then
        (Kept(PAST, PAST, "UTC"), LATER, False, Change("move", PAST)),  # zone moved it: stays fired
        (Kept(LATER, None, None), LATER, True, Change("zone")),
        (Kept(LATER, None, "Europe/Amsterdam"), LATER, False, Change("zone")),
    ],
)
def test_a_new_due_time_changes_the_row_as_documented(
    current: Kept | None, due: datetime, fire_past: bool, expected: Change | None
) -> None:
    assert change_for(current, due, NOW, "UTC", fire_past=fire_past) == expected
