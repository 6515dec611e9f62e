"""Helpers for workflow tests: a batch-release set, results and workflows through the API."""

from __future__ import annotations

from typing import Any

import httpx

from qhook.context import AppContext
from qhook.store import deliveries as delivery_store
from qhook.store import workflows as workflow_store
from qhook.store.deliveries import DeliveryRow
from qhook.store.workflows import ScheduleRecord

RECEIVER = "http://127.0.0.1:9/hook"

BATCH_FIELDS = [
    {"name": "batchnumber_", "label": "Batch number", "type": "text", "required": True},
    {"name": "status_", "type": "list", "options": ["draft", "released", "blocked"]},
    {"name": "ph_", "type": "number"},
    {"name": "operator_", "type": "text"},
    {"name": "expiry_", "type": "date"},
    {"name": "tested_", "type": "datetime"},
    {"name": "note_", "type": "text"},
    {"name": "erp_sync_", "type": "text"},
]


async def make_set(api: httpx.AsyncClient, name: str = "Batch release", fields: Any = None) -> int:
    response = await api.post(
        "/api/v1/sets", json={"name": name, "kind": "analysis_set", "fields": fields or BATCH_FIELDS}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def add_result(api: httpx.AsyncClient, set_id: int, **values: Any) -> int:
    response = await api.post(f"/api/v1/sets/{set_id}/results", json={"values": values})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def patch_result(api: httpx.AsyncClient, set_id: int, result_id: int, **values: Any) -> None:
    response = await api.patch(f"/api/v1/sets/{set_id}/results/{result_id}", json={"values": values})
    assert response.status_code == 200, response.text


async def make_workflow(api: httpx.AsyncClient, set_id: int, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "Released batches to ERP",
        "set_id": set_id,
        "triggers": {"entry": True},
        "signals": [{"type": "webhook", "url": RECEIVER, "subject": "Batch {{ batchnumber_ }}"}],
    }
    doc.update(overrides)
    response = await api.post("/api/v1/workflows", json=doc)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def deliveries_of(ctx: AppContext, result_id: int) -> list[DeliveryRow]:
    with ctx.db.reading() as tx:
        return delivery_store.deliveries_of_result(tx, result_id)


def schedules_of(ctx: AppContext, workflow_id: int) -> list[ScheduleRecord]:
    with ctx.db.reading() as tx:
        return workflow_store.list_schedules(tx, workflow_id=workflow_id)


async def events_of(api: httpx.AsyncClient, result_id: int) -> list[dict[str, Any]]:
    response = await api.get("/api/v1/events", params={"result_id": result_id})
    assert response.status_code == 200, response.text
    body = response.json()
    items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
    return list(reversed(items))  # oldest first
