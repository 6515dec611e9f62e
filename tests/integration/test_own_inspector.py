"""Deliveries to qhook's own inspector pass whatever the SSRF settings; other internal targets do not."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from qhook.api.app import create_app
from qhook.context import AppContext
from qhook.delivery.sender import OutgoingRequest, Sender
from tests.conftest import auth
from tests.support.delivery import attempts_of, delivery, running_worker, until
from tests.support.workflows import BATCH_FIELDS


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def strict(ctx: AppContext) -> AsyncIterator[tuple[AppContext, str]]:
    """The app on a real port with the production defaults: no http://, no internal networks."""
    port = _free_port()
    settings = ctx.settings.model_copy(
        update={"allow_http": False, "allowed_target_networks": "", "host": "127.0.0.1", "port": port}
    )
    strict_ctx = AppContext(settings, ctx.db, ctx.box)
    config = uvicorn.Config(
        create_app(strict_ctx), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield strict_ctx, f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def _post(http: httpx.AsyncClient, path: str, body: dict[str, Any], status: int = 201) -> Any:
    response = await http.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()


async def test_inspector_bin_delivers_while_other_loopback_is_blocked(
    strict: tuple[AppContext, str], admin_key: str
) -> None:
    strict_ctx, base = strict
    async with httpx.AsyncClient(base_url=base, headers=auth(admin_key)) as http:
        set_id = (await _post(http, "/api/v1/sets", {"name": "Batch release", "fields": BATCH_FIELDS}))["id"]
        bin_url = (await _post(http, "/api/v1/inspector/bins", {}))["url"]
        assert bin_url.startswith("http://127.0.0.1:")

        def workflow(name: str, url: str) -> dict[str, Any]:
            return {
                "name": name,
                "set_id": set_id,
                "triggers": {"entry": True},
                "signals": [{"type": "webhook", "url": url}],
            }

        await _post(http, "/api/v1/workflows", workflow("to the bin", bin_url))
        # Plain http to another route of this very server is not the inspector: refused on save.
        refused = await _post(http, "/api/v1/workflows", workflow("x", f"{base}/api/v1/users"), 422)
        assert "signals[0].url" in str(refused)
        # https to loopback passes the save-time check, and the send-time guard refuses it.
        await _post(http, "/api/v1/workflows", workflow("loopback", f"https://localhost:{_free_port()}/x"))
        result = await _post(http, f"/api/v1/sets/{set_id}/results", {"values": {"batchnumber_": "B-1"}})

        async with running_worker(strict_ctx):
            rows = await until(lambda: _finished(strict_ctx, result["id"]), timeout=15)
        by_url = {row.url: row for row in rows}
        assert by_url[bin_url].status == "succeeded"
        other = next(row for url, row in by_url.items() if url != bin_url)
        assert other.status in ("retrying", "failed")
        assert attempts_of(strict_ctx, other.id)[0].error_kind == "ssrf_blocked"

        bin_id = bin_url.rsplit("/", 1)[1]
        captures = (await http.get(f"/api/v1/inspector/bins/{bin_id}/requests")).json()
        assert len(captures) == 1
        assert captures[0]["method"] == "POST"
        assert '"B-1"' in captures[0]["body"]


def _finished(ctx: AppContext, result_id: int) -> list[Any] | None:
    from tests.support.workflows import deliveries_of

    rows = [delivery(ctx, row.id) for row in deliveries_of(ctx, result_id)]
    done = len(rows) == 2 and all(row.status != "pending" and row.attempt_count >= 1 for row in rows)
    return rows if done else None


async def test_sender_exempts_only_inspector_paths(strict: tuple[AppContext, str]) -> None:
    strict_ctx, base = strict
    sender = Sender(strict_ctx.settings)
    try:
        assert sender.is_own_inspector(f"{base}/inspect/abcdef")
        assert not sender.is_own_inspector(f"{base}/inspect/../api/v1/users")
        assert not sender.is_own_inspector(f"http://127.0.0.2:{base.rsplit(':', 1)[1]}/inspect/abc")
        other = await sender.send(OutgoingRequest(f"{base}/healthz", {}, b"{}", 5))
        assert other.error_kind == "ssrf_blocked"
        own = await sender.send(OutgoingRequest(f"{base}/inspect/nosuchbin", {}, b"{}", 5))
        assert own.error_kind == "http_status" and own.status_code == 404
    finally:
        await sender.close()


async def test_own_bins_never_receive_a_credential(strict: tuple[AppContext, str], admin_key: str) -> None:
    """An auth profile's header of any name reached qhook's own bin in clear, where every viewer
    read it (and the database kept it). The bin needs no credential: it gets "[redacted]"."""
    strict_ctx, base = strict
    async with httpx.AsyncClient(base_url=base, headers=auth(admin_key)) as http:
        bin_url = (await _post(http, "/api/v1/inspector/bins", {}))["url"]
        sender = Sender(strict_ctx.settings)
        try:
            request = OutgoingRequest(
                bin_url,
                {"X-Erp-Code": "HDRSECRET-zz9", "Authorization": "Bearer tok-123", "X-Plant": "Delft"},
                b"{}",
                5,
                secret_header_names=frozenset({"X-Erp-Code"}),  # a name no rule knows as a credential
            )
            assert (await sender.send(request)).status_code == 200
        finally:
            await sender.close()
        [capture] = (await http.get(f"/api/v1/inspector/bins/{bin_url.rsplit('/', 1)[1]}/requests")).json()
    assert capture["headers"]["x-erp-code"] == "[redacted]" and capture["headers"]["x-plant"] == "Delft"
    assert "tok-123" not in str(capture) and "HDRSECRET" not in str(capture)
