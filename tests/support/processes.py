"""Child processes the tests start (``qhook worker`` and friends)."""

from __future__ import annotations

import signal
import subprocess


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a clean shutdown), SIGKILL after 15 s; its piped output stays unread for the caller."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
