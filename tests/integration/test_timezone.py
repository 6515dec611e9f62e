"""QHOOK_TIMEZONE: refused at load when unknown (clear message, CLI too), and on_date schedules of
date fields due at the local time of a non-UTC zone, stored in UTC, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pydantic
import pytest
from typer.testing import CliRunner

from qhook.cli import app
from qhook.context import AppContext
from qhook.settings import Settings
from tests.support.workflows import add_result, make_set, make_workflow, patch_result, schedules_of


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"timezone": "Europe/Amsterdam"})


def test_an_unknown_zone_is_refused_when_settings_load() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        Settings(timezone="Europe/Amsterdm")
    assert "unknown time zone 'Europe/Amsterdm'" in str(caught.value)
    with pytest.raises(pydantic.ValidationError):
        Settings(timezone="../../etc/passwd")
    assert Settings(timezone="Europe/Amsterdam").timezone == "Europe/Amsterdam"


def test_the_cli_names_the_bad_setting(tmp_path: Path) -> None:
    env = {"QHOOK_TIMEZONE": "Mars/Olympus", "QHOOK_DATA_DIR": str(tmp_path / "var")}
    result = CliRunner().invoke(app, ["apikey", "list"], env=env)
    assert result.exit_code == 1
    assert "QHOOK_TIMEZONE: unknown time zone 'Mars/Olympus'" in " ".join(result.output.split())
    assert "Traceback" not in result.output


async def test_date_field_due_at_local_time_in_utc(api: httpx.AsyncClient, ctx: AppContext) -> None:
    assert ctx.settings.timezone == "Europe/Amsterdam"
    set_id = await make_set(api)
    workflow = await make_workflow(
        api, set_id, triggers={"on_date": {"field": "expiry_", "offset": "-P7D", "at": "08:00"}}
    )
    winter = await add_result(api, set_id, batchnumber_="B-1", expiry_="2031-01-10")
    summer = await add_result(api, set_id, batchnumber_="B-2", expiry_="2031-07-10")
    # 2031-04-01 minus 7 days is 25 March, still winter time (the clocks go forward on 30 March).
    before_dst = await add_result(api, set_id, batchnumber_="B-3", expiry_="2031-04-01")
    due = {s.result_id: s.due_at for s in schedules_of(ctx, workflow["id"])}
    assert due[winter] == datetime(2031, 1, 3, 7, 0, tzinfo=UTC)  # 08:00 CET
    assert due[summer] == datetime(2031, 7, 3, 6, 0, tzinfo=UTC)  # 08:00 CEST
    assert due[before_dst] == datetime(2031, 3, 25, 7, 0, tzinfo=UTC)
    # Moving the date across the switch moves the UTC hour with it.
    await patch_result(api, set_id, before_dst, expiry_="2031-04-07")
    due = {s.result_id: s.due_at for s in schedules_of(ctx, workflow["id"])}
    assert due[before_dst] == datetime(2031, 3, 31, 6, 0, tzinfo=UTC)


async def test_a_new_zone_moves_the_waiting_due_times_when_the_scheduler_starts(
    api: httpx.AsyncClient, ctx: AppContext, settings: Settings
) -> None:
    """QHOOK_TIMEZONE changed after rows were scheduled: they kept the old zone's time, so equal
    dates fired an hour apart. The scheduler computes again, at start, the unfired rows of another
    zone (or of none: rows from before the zone was kept); fired rows and exact times stay."""
    from sqlalchemy import update

    from qhook import scheduler
    from qhook.context import open_context
    from qhook.store.tables import schedules

    set_id = await make_set(api)
    dated = await make_workflow(
        api, set_id, triggers={"on_date": {"field": "expiry_", "offset": "-P7D", "at": "08:00"}}
    )
    exact = await make_workflow(api, set_id, name="exact", triggers={"on_date": {"field": "tested_"}})
    waiting = await add_result(
        api, set_id, batchnumber_="B-1", expiry_="2031-01-10", tested_="2031-01-10T10:00:00Z"
    )
    legacy = await add_result(api, set_id, batchnumber_="B-2", expiry_="2031-02-10")
    fired = await add_result(api, set_id, batchnumber_="B-3", expiry_="2031-03-10")
    with ctx.db.transaction() as tx:  # one row from before the column, one already fired
        tx.execute(update(schedules).where(schedules.c.result_id == legacy).values(timezone=None))
        tx.execute(
            update(schedules)
            .where(schedules.c.result_id == fired)
            .values(fired_at=datetime(2031, 3, 3, 7, 0, tzinfo=UTC))
        )
    assert scheduler.rezone(ctx) == 1  # the legacy row, computed again in the same zone

    utc = open_context(settings.model_copy(update={"timezone": "UTC"}))
    try:
        assert scheduler.rezone(utc) == 3  # every unfired row: waiting, legacy, the exact one
        assert scheduler.rezone(utc) == 0
    finally:
        utc.db.dispose()
    due = {s.result_id: (s.due_at, s.timezone) for s in schedules_of(ctx, dated["id"])}
    assert due[waiting] == (datetime(2031, 1, 3, 8, 0, tzinfo=UTC), "UTC")  # was 07:00 UTC (08:00 CET)
    assert due[legacy] == (datetime(2031, 2, 3, 8, 0, tzinfo=UTC), "UTC")
    assert due[fired] == (datetime(2031, 3, 3, 7, 0, tzinfo=UTC), "Europe/Amsterdam")  # fired: left
    [(exact_row)] = schedules_of(ctx, exact["id"])
    assert exact_row.due_at == datetime(2031, 1, 10, 10, 0, tzinfo=UTC) and exact_row.timezone == "UTC"
