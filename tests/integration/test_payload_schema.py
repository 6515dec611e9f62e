"""Real delivery bodies (new, modified, deleted, date, manual) validate against the published schema."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from typer.testing import CliRunner

from qhook import scheduler
from qhook.cli import app
from qhook.context import AppContext
from qhook.schemas import payload_schema
from tests.support.workflows import (
    add_result,
    deliveries_of,
    make_set,
    make_workflow,
    patch_result,
    schedules_of,
)

ALL_TRIGGERS = {
    "entry": True,
    "modification": True,
    "deletion": True,
    "manual": True,
    "on_date": {"field": "expiry_", "offset": "-P7D", "at": "08:00"},
}


def _validator() -> jsonschema.Draft202012Validator:
    schema = payload_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


async def test_every_action_validates(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = await make_set(api)
    workflow = await make_workflow(
        api,
        set_id,
        triggers=ALL_TRIGGERS,
        signals=[{"type": "webhook", "url": "http://127.0.0.1:9/h", "subject": "Batch {{ batchnumber_ }}"}],
    )
    result_id = await add_result(
        api,
        set_id,
        batchnumber_="B-1",
        status_="draft",
        ph_="<0.5",
        operator_="Jane Doe",
        expiry_="2031-03-10",
        tested_="2025-10-02T13:37:00Z",
    )
    await patch_result(api, set_id, result_id, status_="released", ph_=6.8, note_=None)
    run = await api.post(f"/api/v1/workflows/{workflow['id']}/run", json={"result_ids": [result_id]})
    assert run.status_code == 200, run.text
    [schedule] = schedules_of(ctx, workflow["id"])
    assert scheduler.tick(ctx, schedule.due_at) == 1
    deleted = await api.delete(f"/api/v1/sets/{set_id}/results/{result_id}")
    assert deleted.status_code in (200, 204), deleted.text

    bodies = [json.loads(d.body) for d in deliveries_of(ctx, result_id)]
    assert [b["action"] for b in bodies] == ["new", "modified", "manual", "date", "deleted"]
    validator = _validator()
    for body in bodies:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
        assert errors == [], (body["action"], errors)
    assert bodies[1]["changes"]["status_"] == {"old": "draft", "new": "released"}
    assert bodies[0]["results"]["ph_"] == "<0.5"  # a qualified number stays text
    assert bodies[4]["results"]["batchnumber_"] == "B-1"  # deleted: the result as it was


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"action": "created"}, "action"),
        ({"results": {"date": "2025-10-02 13:37:00"}}, "@id"),
        ({"results": {"@id": 1, "date": "2025-10-02 13:37:00", "x_": {"nested": 1}}}, "x_"),
        ({"changes": {"status_": {"old": "a"}}}, "new"),
        ({"event_id": "17"}, "event_id"),
        ({"occurred_at": "2025-10-02 13:37:00"}, "occurred_at"),
    ],
)
def test_schema_refuses_bodies_that_break_the_contract(change: dict[str, Any], where: str) -> None:
    good = {
        "action": "modified",
        "subject": "",
        "message": "",
        "results": {"@id": 1, "date": "2025-10-02 13:37:00", "status_": "released", "ph_": 6.8},
        "changes": {"status_": {"old": "draft", "new": "released"}},
        "set": {"id": 1, "name": "Batch release"},
        "workflow": {"id": 2, "name": "Released batches to ERP"},
        "event_id": "evt_01J9Z3K4M5N6P7Q8R9S0T1V2W3",
        "occurred_at": "2025-10-02T13:37:00Z",
    }
    validator = _validator()
    assert list(validator.iter_errors(good)) == []
    errors = list(validator.iter_errors({**good, **change}))
    assert errors, change
    assert where in " ".join(f"{list(e.absolute_path)} {e.message}" for e in errors)


def test_a_key_added_later_does_not_break_a_validating_receiver() -> None:
    """The schema says receivers should ignore keys they do not know, yet refused every body with
    one (``additionalProperties: false``): a receiver validating with it would break on upgrade."""
    body = {
        "action": "new",
        "subject": "",
        "message": "",
        "results": {"@id": 1, "date": "2025-10-02 13:37:00"},
        "changes": {},
        "set": {"id": 1, "name": "Batch release"},
        "workflow": {"id": 2, "name": "Released batches to ERP"},
        "event_id": "evt_01J9Z3K4M5N6P7Q8R9S0T1V2W3",
        "occurred_at": "2025-10-02T13:37:00Z",
        "added_in_a_later_version": {"any": "shape"},
    }
    assert list(_validator().iter_errors(body)) == []


def test_cli_prints_the_schema() -> None:
    result = CliRunner().invoke(app, ["schema", "payload"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == payload_schema()
    assert json.loads(result.output)["properties"]["action"]["enum"][-1] == "test"


def test_examples_in_the_docs_validate() -> None:
    text = (Path(__file__).parents[2] / "docs" / "payload.md").read_text()
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]
    assert {e["action"] for e in examples} == {"new", "modified", "deleted", "date"}
    validator = _validator()
    for example in examples:
        assert list(validator.iter_errors(example)) == [], example["action"]
