"""Send test on SQLite and PostgreSQL: a signed sample sent now, over real sockets, logged in the Hub."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import pytest
import uvicorn
from aiohttp import web
from standardwebhooks import Webhook

from qhook.api.app import create_app
from qhook.context import AppContext
from qhook.schemas import payload_schema
from tests.conftest import auth
from tests.support.delivery import receiver
from tests.support.workflows import BATCH_FIELDS


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def http(ctx: AppContext, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client of the app served on a real port (its inspector must be reachable by socket)."""
    port = _free_port()
    served = AppContext(ctx.settings.model_copy(update={"port": port}), ctx.db, ctx.box)
    config = uvicorn.Config(
        create_app(served), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=auth(admin_key)) as client:
        yield client
    server.should_exit = True
    await task


async def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def _setup(http: httpx.AsyncClient, url: str | None = None, **signal: Any) -> dict[str, Any]:
    """A batch set, one result, and a workflow with one webhook signal to ``url`` (a new bin if None)."""
    set_id = (
        await _ok(
            await http.post("/api/v1/sets", json={"name": "Batch release", "fields": BATCH_FIELDS}), 201
        )
    )["id"]
    result = await _ok(
        await http.post(
            f"/api/v1/sets/{set_id}/results",
            json={"values": {"batchnumber_": "B-7001", "status_": "draft", "ph_": 6.8}},
        ),
        201,
    )
    bin_id = None
    if url is None:
        created = await _ok(await http.post("/api/v1/inspector/bins", json=signal.pop("bin", {})), 201)
        url, bin_id = created["url"], created["id"]
    workflow = await _ok(
        await http.post(
            "/api/v1/workflows",
            json={
                "name": "Released batches to ERP",
                "set_id": set_id,
                "triggers": {"manual": True},
                "signals": [{"type": "webhook", "url": url, "subject": "Batch {{ batchnumber_ }}", **signal}],
            },
        ),
        201,
    )
    return {
        "set_id": set_id,
        "result_id": result["id"],
        "workflow_id": workflow["id"],
        "signal_id": workflow["signals"][0]["id"],
        "secret": workflow["signals"][0]["secret"],
        "bin_id": bin_id,
    }


def _test_path(setup: dict[str, Any]) -> str:
    return f"/api/v1/workflows/{setup['workflow_id']}/signals/{setup['signal_id']}/test"


async def test_sample_to_the_inspector_is_signed_and_logged_as_a_test(http: httpx.AsyncClient) -> None:
    setup = await _setup(http)
    answer = await _ok(await http.post(_test_path(setup)))
    attempt = answer["attempt"]
    assert attempt["status_code"] == 200
    assert attempt["error_kind"] is None and attempt["hint"] is None
    assert json.loads(attempt["response_body"]) == {"ok": True}
    assert attempt["duration_ms"] >= 0
    assert answer["webhook_id"].startswith("msg_")

    captures = await _ok(await http.get(f"/api/v1/inspector/bins/{setup['bin_id']}/requests"))
    assert len(captures) == 1
    assert captures[0]["signature"] == "valid"
    assert captures[0]["headers"]["webhook-id"] == answer["webhook_id"]
    body = json.loads(captures[0]["body"])
    assert body["action"] == "test"
    assert body["results"]["@id"] == 0
    assert body["results"]["batchnumber_"] == "B-2025-0042"  # a realistic sample, by the field's name
    assert body["results"]["status_"] == "draft"  # a list field: its first option's label
    assert isinstance(body["results"]["ph_"], float)
    assert body["subject"] == "Batch B-2025-0042"
    assert body["result_version"] == 1  # a sample as just entered: a template printing it gives JSON
    jsonschema.Draft202012Validator(payload_schema()).validate(body)

    detail = await _ok(await http.get(f"/api/v1/deliveries/{answer['delivery_id']}"))
    assert detail["is_test"] is True
    assert detail["action"] == "test"
    assert detail["status"] == "succeeded"
    assert [a["trigger"] for a in detail["attempts"]] == ["test"]
    assert detail["request"]["body"] == captures[0]["body"]
    tests = await _ok(await http.get("/api/v1/deliveries", params={"action": "test"}))
    assert [d["id"] for d in tests["items"]] == [answer["delivery_id"]]


async def test_chosen_result_and_failure_with_hint_are_not_retried(http: httpx.AsyncClient) -> None:
    setup = await _setup(http, bin={"responses": {"status": 500, "body": "database down"}})
    answer = await _ok(await http.post(_test_path(setup), json={"result_id": setup["result_id"]}))
    attempt = answer["attempt"]
    assert attempt["status_code"] == 500
    assert attempt["error_kind"] == "http_status"
    assert attempt["response_body"] == '"database down"' or "database down" in attempt["response_body"]
    assert attempt["hint"].startswith("Send test, not retried. ") and "500" in attempt["hint"]
    assert "qhook retries" not in attempt["hint"]  # it said both
    captures = await _ok(await http.get(f"/api/v1/inspector/bins/{setup['bin_id']}/requests"))
    assert json.loads(captures[0]["body"])["results"]["batchnumber_"] == "B-7001"
    assert json.loads(captures[0]["body"])["result_version"] == 1  # the chosen result's version

    await asyncio.sleep(0.3)  # nothing retries a test, not even a worker that looks now
    detail = await _ok(await http.get(f"/api/v1/deliveries/{answer['delivery_id']}"))
    assert detail["status"] == "failed"
    assert detail["attempt_count"] == 1
    assert detail["next_attempt_at"] is None
    assert detail["hint"] == attempt["hint"]


async def test_real_receiver_gets_the_auth_profile_header_and_a_valid_signature(
    http: httpx.AsyncClient,
) -> None:
    profile = await _ok(
        await http.post(
            "/api/v1/auth-profiles",
            json={
                "name": "LIMS key",
                "type": "header",
                "header_name": "X-API-Key",
                "header_value": "hv-9c1",
                "allowed_domains": ["127.0.0.1"],
            },
        ),
        201,
    )

    async def created(request: web.Request) -> web.Response:
        return web.json_response({"received": True}, status=201, headers={"X-Request-Id": "r-1"})

    async with receiver(created) as server:
        setup = await _setup(http, server.url, auth_profile_id=profile["id"])
        answer = await _ok(await http.post(_test_path(setup)))
    assert answer["attempt"]["status_code"] == 201
    response_headers = {k.lower(): v for k, v in answer["attempt"]["response_headers"].items()}
    assert response_headers["x-request-id"] == "r-1"
    [got] = server.received
    assert got.headers["X-API-Key"] == "hv-9c1"
    headers = {k.lower(): v for k, v in got.headers.items()}
    Webhook(setup["secret"]).verify(got.body, headers)
    assert headers["webhook-id"] == answer["webhook_id"]
    detail = await _ok(await http.get(f"/api/v1/deliveries/{answer['delivery_id']}"))
    assert detail["attempts"][0]["request_headers"]["X-API-Key"] == "[redacted]"
    assert "hv-9c1" not in json.dumps(detail)


async def test_connection_refused_has_a_hint(http: httpx.AsyncClient) -> None:
    setup = await _setup(http, f"http://127.0.0.1:{_free_port()}/hook")
    attempt = (await _ok(await http.post(_test_path(setup))))["attempt"]
    assert attempt["status_code"] is None
    assert attempt["error_kind"] == "connect"
    assert attempt["hint"]


async def test_roles_and_bad_input(http: httpx.AsyncClient, make_key: Any) -> None:
    setup = await _setup(http)
    viewer = auth(make_key("viewer", "val"))
    assert (await http.post(_test_path(setup), headers=viewer)).status_code == 403
    editor = auth(make_key("editor", "ed"))
    assert (await http.post(_test_path(setup), headers=editor)).status_code == 200
    missing = await http.post(f"/api/v1/workflows/{setup['workflow_id']}/signals/999999/test")
    assert missing.status_code == 404
    bad = await http.post(_test_path(setup), json={"result_id": 999999})
    assert bad.status_code == 422
    assert "result_id" in bad.text
