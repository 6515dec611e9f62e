"""Times whose UTC falls outside the years 1 to 9999 are a 422 naming the field, on both databases.

0001-01-01T00:00:00+05:00 is in the year 0 in UTC: converting it raised OverflowError, a 500, in
the Hub's since/until, the stats, a result's date-time value and a workflow's filter. (Results
dated at the calendar's edges and their schedules: tests/integration/test_schedule.py.)
"""

from __future__ import annotations

import httpx

from tests.support.workflows import RECEIVER, make_set

YEAR_ZERO = "0001-01-01T00:00:00+05:00"
YEAR_TEN_THOUSAND = "9999-12-31T23:59:59-05:00"


def _refused(response: httpx.Response) -> tuple[str, str]:
    assert response.status_code == 422, response.text
    detail = response.json()["details"][0]
    return detail["field"], detail["error"]


async def test_hub_and_stats_times(api: httpx.AsyncClient) -> None:
    assert _refused(await api.get("/api/v1/deliveries", params={"since": YEAR_ZERO})) == (
        "since",
        "a time between the years 1 and 9999 in UTC",
    )
    assert _refused(await api.get("/api/v1/deliveries", params={"until": YEAR_TEN_THOUSAND}))[0] == "until"
    replay = await api.post("/api/v1/deliveries/replay", json={"since": YEAR_ZERO, "status": "failed"})
    assert _refused(replay)[0] == "since"
    assert _refused(await api.get("/api/v1/stats", params={"since": YEAR_ZERO}))[0] == "since"
    # A zone on one side only was a TypeError comparing them (a 500): the one without is named.
    mixed = await api.get(
        "/api/v1/deliveries", params={"since": "2026-01-01T00:00:00Z", "until": "2025-01-01T00:00:00"}
    )
    assert _refused(mixed)[0] == "until"
    fine = await api.get(
        "/api/v1/deliveries", params={"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59Z"}
    )
    assert fine.status_code == 200


async def test_result_values_and_filters(api: httpx.AsyncClient) -> None:
    set_id = await make_set(api)
    stored = await api.post(
        f"/api/v1/sets/{set_id}/results", json={"values": {"batchnumber_": "B", "tested_": YEAR_ZERO}}
    )
    assert _refused(stored) == (
        "values.tested_",
        "expected a date and time between the years 1 and 9999 in UTC",
    )
    workflow = {
        "name": "w",
        "set_id": set_id,
        "triggers": {"entry": True},
        "filter": {"field": "tested_", "op": "gt", "value": YEAR_ZERO},
        "signals": [{"type": "webhook", "url": RECEIVER}],
    }
    assert _refused(await api.post("/api/v1/workflows", json=workflow))[0].startswith("filter")
