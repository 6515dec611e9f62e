"""End to end: ``qhook serve`` as a subprocess on a fresh SQLite data dir, over real HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qhook.services import users
from qhook.settings import Settings
from qhook.store.db import Database
from tests.support.pg import free_port
from tests.support.serve import serving

CREDENTIALS = re.compile(r"First start: admin user (\S+); its password is in (\S+) ")


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QHOOK_")}
    # Wide and plain, so the printed credentials stay on one line.
    env.update({"QHOOK_DATA_DIR": str(data_dir), "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"})
    return env


def _qhook(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qhook", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, str], subprocess.Popen[bytes]]]:
    env = _env(tmp_path / "var")
    port = free_port()
    log = tmp_path / "serve.log"
    with serving(["serve", "--port", str(port)], env=env, cwd=tmp_path, log=log, port=port) as (
        base,
        process,
    ):
        yield base, log, env, process


def test_serve_end_to_end(server: tuple[str, Path, dict[str, str], subprocess.Popen[bytes]]) -> None:
    base, log, env, process = server
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    found = CREDENTIALS.search(log.read_text())
    assert found, log.read_text()
    # Not on a terminal (a service's log is read and kept by others): the password is in a file
    # only qhook's user can read, never in the output.
    admin, where = found.groups()
    password_file = Path(where)
    assert password_file.parent == Path(env["QHOOK_DATA_DIR"]).resolve()
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    assert password and password not in log.read_text()
    database = Database(Settings(data_dir=Path(env["QHOOK_DATA_DIR"])).resolved_database_url)
    try:
        assert users.check_password(database, admin, password).role == "admin"
    finally:
        database.dispose()

    created = _qhook("apikey", "create", admin, "--label", "e2e", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}"}

    with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
        new_set = http.post(
            "/api/v1/sets",
            json={
                "name": "Batch release",
                "kind": "analysis_set",
                "fields": [
                    {"name": "batchnumber_", "type": "text", "required": True},
                    {"name": "status_", "type": "list", "options": ["draft", "released", "blocked"]},
                    {"name": "ph_", "type": "number"},
                ],
            },
        )
        assert new_set.status_code == 201, new_set.text
        set_id = new_set.json()["id"]
        native = http.post(f"/api/v1/sets/{set_id}/results", json={"values": {"batchnumber_": "B-1"}})
        assert native.status_code == 201, native.text
        stored = http.post(
            "/api/storeResults",
            data={
                "setId": str(set_id),
                "results": json.dumps(
                    [
                        {
                            "batchnumber_": "B-2",
                            "status_": "released",
                            "ph_": "6.8",
                            "date": "2025-10-02 13:37:00",
                        },
                        {"batchnumber_": "B-1", "status_": "blocked"},
                    ]
                ),
                "keyField": "batchnumber_",
            },
        )
        assert stored.status_code == 200, stored.text
        assert [r["action"] for r in stored.json()["results"]] == ["created", "updated"]
        assert int(stored.headers["X-RateLimit-Limit"]) >= 1
        rows = http.get(
            "/api/getResults",
            params={"setId": set_id, "sort": "batchnumber_:asc", "includeId": "true"},
        ).json()
    assert [(r["batchnumber_"], r["status_"], r["ph_"]) for r in rows] == [
        ("B-1", "blocked", None),
        ("B-2", "released", 6.8),
    ]
    assert rows[0]["@id"] == native.json()["id"]
    assert rows[1]["date"] == "2025-10-02 13:37:00"

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20) == 0, log.read_text()

    # The file goes once the password in it stops working: at a change (here the CLI's) ...
    changed = _qhook("user", "set-password", admin, "--password", "changed-at-the-cli", env=env)
    assert changed.returncode == 0, changed.stderr
    assert "removed" in changed.stdout and not password_file.exists()
    # ... and at start, for one changed while the file was away (restored from a backup, say).
    password_file.write_text(password + "\n")
    port = free_port()
    with serving(["serve", "--port", str(port)], env=env, cwd=log.parent, log=log, port=port):
        assert not password_file.exists()


def test_on_a_terminal_the_first_password_is_shown_once_and_written_nowhere(tmp_path: Path) -> None:
    import pty
    import select
    import time

    env = _env(tmp_path / "var")
    env["TERM"] = "xterm"
    main, child = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "qhook", "serve", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=child,
    )
    os.close(child)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"First start" not in seen or b"shown once" not in seen:
            assert time.monotonic() < deadline and process.poll() is None, seen
            if select.select([main], [], [], 0.5)[0]:
                seen += os.read(main, 65536)
    finally:
        # Stopped the moment the password shows, as uvicorn takes over (tests/integration/
        # test_serve_interrupt.py): such a Ctrl-C was at times dropped, and serve ran on.
        process.send_signal(signal.SIGINT)
        # Read on while it stops: a process whose terminal nobody reads blocks once it is full.
        deadline = time.monotonic() + 20
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # EIO once the process closed its end
                if select.select([main], [], [], 0.2)[0]:
                    seen += os.read(main, 65536)
        process.wait(1)
        os.close(main)
    text = re.sub(r"\x1b\[[0-9;]*m", "", seen.decode(errors="replace"))
    assert re.search(r"First start: admin user admin, password \S+ \(shown once;", text), text
    assert not (tmp_path / "var" / "initial-admin-password").exists()


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """qhook said "qhook is running", made the database, the first admin and its password file,
    started the worker, and only then died with uvicorn's bind error (an operator's review)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        said = _qhook("serve", "--port", str(port), env=_env(tmp_path / "var"))
    assert said.returncode == 1, said.stderr
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in said.stderr
    assert "Traceback" not in said.stderr and "running" not in said.stdout + said.stderr
    assert not (tmp_path / "var").exists()
