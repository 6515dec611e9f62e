"""End to end: ``qhook serve`` with default settings on a fresh SQLite data dir, then ``qhook demo``.

Default settings mean no plain http:// targets and no internal networks: the demo works only
because deliveries to qhook's own inspector are always allowed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from qhook.services import users
from qhook.settings import Settings
from qhook.store.db import Database
from tests.support.pg import free_port
from tests.support.serve import serving

BIN_LINK = re.compile(r"/api/v1/inspector/bins/([A-Za-z0-9_-]+)/requests")
WORKFLOW_LINK = re.compile(r"deliveries\?workflow_id=(\d+)")


def _env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QHOOK_")}
    env.update(
        {
            "QHOOK_DATA_DIR": str(data_dir),
            "QHOOK_PORT": str(port),
            "COLUMNS": "250",
            "NO_COLOR": "1",
            "TERM": "dumb",
        }
    )
    return env


def _qhook(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qhook", *args], env=env, capture_output=True, text=True, timeout=90, cwd=cwd
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    env = _env(tmp_path / "var", port)
    with serving(["serve"], env=env, cwd=tmp_path, log=tmp_path / "serve.log", port=port) as (base, _):
        yield base, env


def test_demo_ends_with_a_captured_signature_valid_delivery(
    served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    base, env = served
    first = _qhook("demo", env=env, cwd=tmp_path)  # default URL from QHOOK_PORT
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Standard Webhooks signature: valid" in first.stdout, first.stdout
    assert f"{base}/ui" in first.stdout and f"{base}/api/v1/docs" in first.stdout
    bin_match = BIN_LINK.search(first.stdout)
    workflow_match = WORKFLOW_LINK.search(first.stdout)
    assert bin_match and workflow_match, first.stdout
    bin_id, workflow_id = bin_match.group(1), int(workflow_match.group(1))

    created = _qhook("user", "create", "checker", "--role", "admin", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    made = _qhook("apikey", "create", "checker", "--label", "e2e", env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
        captures = http.get(f"/api/v1/inspector/bins/{bin_id}/requests").json()
        workflow = http.get(f"/api/v1/workflows/{workflow_id}").json()
        signal_id = workflow["signals"][0]["id"]
        assert len(captures) == 1
        capture = captures[0]
        assert capture["method"] == "POST" and capture["signature"] == "valid"
        assert '"status_":"released"' in capture["body"]
        # The secret is never read back; a rotation shows the new one, which signs the next run's
        # delivery: checked below with the reference library.
        rotated = http.post(f"/api/v1/workflows/{workflow_id}/signals/{signal_id}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
        secret = rotated.json()["secret"]
        assert workflow["name"] == "Released batches to ERP"
        assert workflow["filter"] == {"all": [{"field": "status_", "op": "eq", "value": "released"}]}

        # Again, with --url: the same set, workflow and bin; one more delivery; the demo's keys revoked.
        second = _qhook("demo", "--url", base, env=env, cwd=tmp_path)
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"bins/{bin_id}/requests" in second.stdout
        assert f"workflow_id={workflow_id}" in second.stdout
        captures = http.get(f"/api/v1/inspector/bins/{bin_id}/requests").json()
        assert len(captures) == 2
        newest = max(captures, key=lambda c: c["id"])
        assert newest["signature"] == "valid"
        Webhook(secret).verify(newest["body"], newest["headers"])
        sets = [s for s in http.get("/api/v1/sets").json() if s["name"] == "Batch release"]
        assert len(sets) == 1
    database = Database(Settings(data_dir=Path(env["QHOOK_DATA_DIR"])).resolved_database_url)
    try:
        keys = users.list_api_keys(database, "demo")
    finally:
        database.dispose()
    assert len(keys) == 2
    assert all(k.revoked_at is not None for k in keys)


def test_demo_without_a_server_says_what_to_do(tmp_path: Path) -> None:
    env = _env(tmp_path / "var", free_port())
    result = _qhook("demo", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "make run" in result.stderr and "qhook serve" in result.stderr
