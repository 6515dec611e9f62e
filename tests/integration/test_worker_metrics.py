"""``qhook worker --metrics-port``: a Prometheus endpoint on the worker process itself."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qhook.context import AppContext
from tests.conftest import TEST_SECRET_KEY
from tests.support import processes
from tests.support.contexts import shared_context
from tests.support.delivery import delivery, enqueue, make_signal, receiver, until
from tests.support.pg import free_port

QHOOK = str(Path(sys.executable).parent / "qhook")


@pytest.fixture
def file_ctx(tmp_path: Path) -> Iterator[AppContext]:
    with shared_context(tmp_path) as context:
        yield context


def start(tmp_path: Path, args: list[str], extra_env: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "QHOOK_DATA_DIR": str(tmp_path / "var"),
        "QHOOK_SECRET_KEY": TEST_SECRET_KEY,
        "QHOOK_ALLOW_HTTP": "true",
        "QHOOK_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
        "QHOOK_POLL_INTERVAL_S": "0.2",
        "QHOOK_LOG_LEVEL": "WARNING",
        **extra_env,
    }
    return subprocess.Popen([QHOOK, "worker", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stop(process: subprocess.Popen[bytes]) -> bytes:
    processes.stop(process)
    return process.stderr.read() if process.stderr else b""


def scrape(port: int) -> str | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    except httpx.TransportError:
        return None
    return response.text if response.status_code == 200 else None


def sample(text: str, prefix: str) -> float:
    """The value of the first exposition line starting with ``prefix``."""
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {prefix!r} in:\n{text}")


@pytest.mark.parametrize("how", ["option", "setting"])
async def test_worker_serves_its_metrics(file_ctx: AppContext, tmp_path: Path, how: str) -> None:
    port = free_port()
    if how == "option":
        process = start(tmp_path, ["--metrics-port", str(port), "--metrics-host", "127.0.0.1"], {})
    else:
        process = start(tmp_path, [], {"QHOOK_WORKER_METRICS_PORT": str(port)})
    try:
        async with receiver() as rx:
            signal_id = make_signal(file_ctx, rx.url)
            [delivery_id] = enqueue(file_ctx, signal_id, rx.url, ['{"n": 1}'])
            await until(lambda: delivery(file_ctx, delivery_id).status == "succeeded", timeout=30)
        text = await until(lambda: scrape(port), timeout=10)
    finally:
        errors = stop(process)
    assert process.returncode == 0, errors
    assert sample(text, 'qhook_deliveries_total{outcome="succeeded"}') == 1.0
    assert sample(text, "qhook_attempt_duration_seconds_count") == 1.0
    assert 'qhook_attempt_duration_seconds_bucket{le="60.0"} 1.0' in text
    assert sample(text, 'qhook_queue_depth{status="succeeded"}') == 1.0  # read from the database
    assert sample(text, "qhook_open_circuits") == 0.0


def test_metrics_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start(tmp_path, ["--metrics-port", str(port)], {})
        try:
            process.wait(30)
        finally:
            errors = stop(process)
    assert process.returncode == 1
    assert f"Cannot serve metrics on port {port}".encode() in errors
