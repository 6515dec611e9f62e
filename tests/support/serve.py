"""``qhook serve`` as a real subprocess for end-to-end tests: started, ready, stopped cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


@contextmanager
def serving(
    args: list[str], *, env: dict[str, str], cwd: Path, log: Path, port: int
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``python -m qhook ARGS`` until /readyz answers; yields (base URL, process); SIGINT at the end."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "qhook", *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "qhook serve did not become ready:\n" + log.read_text()
            time.sleep(0.1)
        yield base, process
    finally:
        if process.poll() is None:  # a test may have stopped it itself
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
