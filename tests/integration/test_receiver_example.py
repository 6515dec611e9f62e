"""docs/examples/receiver.py runs (uvicorn, its own process) and takes real qhook deliveries."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.store.tables import deliveries
from tests.support.delivery import delivery, running_worker, until
from tests.support.workflows import add_result, deliveries_of, make_set, make_workflow, patch_result

EXAMPLES = Path(__file__).parents[2] / "docs" / "examples"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ExampleReceiver:
    def __init__(self, tmp_path: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/webhooks/qhook"
        self.log = tmp_path / "received.jsonl"
        self.output = tmp_path / "receiver.out"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, secret: str) -> None:
        env = {**os.environ, "QHOOK_WEBHOOK_SECRET": secret, "RECEIVER_LOG": str(self.log)}
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "receiver:app",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
                cwd=EXAMPLES,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while True:
            assert self.process.poll() is None, self.output.read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                assert time.monotonic() < deadline, self.output.read_text()
                time.sleep(0.05)

    def lines(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def example(tmp_path: Path) -> Iterator[ExampleReceiver]:
    receiver = ExampleReceiver(tmp_path)
    yield receiver
    receiver.stop()


async def _workflow(api: httpx.AsyncClient, set_id: int, url: str, name: str) -> dict[str, Any]:
    response = await api.post(
        "/api/v1/workflows",
        json={
            "name": name,
            "set_id": set_id,
            "triggers": {"entry": True},
            "signals": [{"type": "webhook", "url": url}],
        },
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _settled(ctx: AppContext, result_id: int, count: int) -> list[Any] | None:
    rows = [delivery(ctx, d.id) for d in deliveries_of(ctx, result_id)]
    done = len(rows) == count and all(r.status in ("succeeded", "failed") for r in rows)
    return rows if done else None


async def test_example_receiver_verifies_dedupes_and_refuses_bad_signatures(
    api: httpx.AsyncClient, ctx: AppContext, example: ExampleReceiver
) -> None:
    set_id = await make_set(api)
    workflow = await _workflow(api, set_id, example.url, "to the example")
    example.start(workflow["signals"][0]["secret"])

    first = await add_result(api, set_id, batchnumber_="B-1", status_="released")
    second = await add_result(api, set_id, batchnumber_="B-2")
    async with running_worker(ctx):
        [one] = await until(lambda: _settled(ctx, first, 1))
        [two] = await until(lambda: _settled(ctx, second, 1))
        assert (one.status, one.last_status_code) == ("succeeded", 202)
        assert (two.status, two.last_status_code) == ("succeeded", 202)
        await until(lambda: len(example.lines()) == 2)
        assert {(line["webhook_id"], line["results"]["batchnumber_"]) for line in example.lines()} == {
            (one.webhook_id, "B-1"),
            (two.webhook_id, "B-2"),
        }

        # A redelivery carries the same webhook-id: answered 200, not processed twice.
        redelivered = await api.post(f"/api/v1/deliveries/{one.id}/redeliver")
        assert redelivered.status_code in (200, 202), redelivered.text
        await until(
            lambda: delivery(ctx, one.id).attempt_count == 2 and delivery(ctx, one.id).status == "succeeded"
        )
        assert delivery(ctx, one.id).last_status_code == 200

        # A send test is accepted and not processed.
        path = f"/api/v1/workflows/{workflow['id']}/signals/{workflow['signals'][0]['id']}/test"
        tested = await api.post(path)
        assert tested.json()["attempt"]["status_code"] == 202, tested.text

        # Another signal signs with another secret: refused with 401, which qhook does not retry.
        await _workflow(api, set_id, example.url, "wrong secret")
        third = await add_result(api, set_id, batchnumber_="B-3")
        rows = await until(lambda: _settled(ctx, third, 2))
    assert sorted((r.status, r.last_status_code, r.attempt_count) for r in rows) == [
        ("failed", 401, 1),
        ("succeeded", 202, 1),
    ]
    await until(lambda: len(example.lines()) == 3)
    assert sorted(line["results"]["batchnumber_"] for line in example.lines()) == ["B-1", "B-2", "B-3"]
    assert all(line["action"] == "new" for line in example.lines())


async def test_example_receiver_skips_an_older_version_that_arrives_after_a_newer_one(
    api: httpx.AsyncClient, ctx: AppContext, example: ExampleReceiver
) -> None:
    """Without ``ordered`` a retry of a result's first body can come after its second: the example
    keeps the newest ``result_version`` per result and takes nothing older."""
    set_id = await make_set(api)
    workflow = await make_workflow(
        api,
        set_id,
        triggers={"entry": True, "modification": True},
        signals=[{"type": "webhook", "url": example.url}],
    )
    example.start(workflow["signals"][0]["secret"])
    result_id = await add_result(api, set_id, batchnumber_="B-1", status_="draft")
    [entered] = deliveries_of(ctx, result_id)
    # As after a first attempt that failed: the entry's body is retried in two seconds.
    with ctx.db.transaction() as tx:
        tx.execute(
            update(deliveries)
            .where(deliveries.c.id == entered.id)
            .values(status="retrying", attempt_count=1, next_attempt_at=utcnow() + timedelta(seconds=2))
        )
    await patch_result(api, set_id, result_id, status_="released")
    async with running_worker(ctx):
        rows = await until(lambda: _settled(ctx, result_id, 2), timeout=20)
    by_action = {r.action: r for r in rows}
    assert by_action["modified"].delivered_at < by_action["new"].delivered_at  # the older came last
    assert (by_action["new"].status, by_action["new"].last_status_code) == ("succeeded", 200)
    assert (by_action["modified"].status, by_action["modified"].last_status_code) == ("succeeded", 202)
    await until(lambda: len(example.lines()) == 1)
    [taken] = example.lines()
    assert (taken["action"], taken["result_version"], taken["results"]["status_"]) == (
        "modified",
        2,
        "released",
    )
