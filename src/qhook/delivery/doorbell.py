"""SQLite's stand-in for PostgreSQL's NOTIFY: a datagram that wakes the worker in another process.

SQLite serves one worker (``worker.SingleWorkerLock``): inside ``qhook serve``, or as one
``qhook worker`` beside ``qhook serve --no-worker``, which gives the API and the deliveries a core
each. Apart, the worker heard of new work only at its next poll (``QHOOK_POLL_INTERVAL_S``). Now
it binds a datagram socket next to the database (``worker.wake``, beside ``worker.lock``) and any
process that queued work rings it: one non-blocking send that never waits, dropped harmlessly when
no worker listens or its queue is full (a wake-up is already waiting then). Polling stays the
fallback, as for a lost NOTIFY.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

NAME = "worker.wake"
MAX_PATH_BYTES = 107  # sun_path holds 108 bytes on Linux, the last one a NUL
DRAIN_AT_ONCE = 256


def sqlite_folder(database_file: Path | None, data_dir: Path) -> Path:
    """The folder of a SQLite database file (``Database.file``; the data folder for an in-memory one)."""
    return database_file.parent if database_file is not None else data_dir


def path_for(database_file: Path | None, data_dir: Path, index: int = 0) -> Path | None:
    """Where the bell lives, or None when the path is too long for a Unix socket. ``index``: of the
    processes of one ``qhook worker --processes N``; the others' bells are ``worker.wake.<index>``,
    rung by the first process whenever its own rings."""
    name = NAME if index == 0 else f"{NAME}.{index}"
    path = (sqlite_folder(database_file, data_dir) / name).absolute()
    return path if len(os.fsencode(path)) <= MAX_PATH_BYTES else None


def ringer(path: Path | None) -> Callable[[], None]:
    """A function that wakes the worker listening at ``path``; safe from any thread, never blocks."""
    if path is None:
        return _silent
    sock = _sending_socket()
    address = os.fsencode(path)

    def ring() -> None:
        # No listener (FileNotFoundError, ConnectionRefusedError) or a full queue (BlockingIOError):
        # either way nothing more to do.
        with contextlib.suppress(OSError):
            sock.sendto(b"\x01", address)

    return ring


_sender: socket.socket | None = None
_sender_made = threading.Lock()


def _sending_socket() -> socket.socket:
    """One unbound socket per process sends to any bell: a context per test or CLI command does not
    leave a socket of its own behind."""
    global _sender
    with _sender_made:
        if _sender is None:
            _sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            _sender.setblocking(False)
            atexit.register(_sender.close)
        return _sender


def _silent() -> None:
    """No bell (a path too long for a socket, or none bound): the worker's polling finds the work."""


def listen(
    loop: asyncio.AbstractEventLoop, path: Path | None, on_ring: Callable[[], None]
) -> Callable[[], None]:
    """Bind the bell at ``path`` and call ``on_ring`` on the loop when it rings; returns a closer.

    The caller is the database's one worker (it holds the worker lock), so a socket file left by a
    killed worker is replaced.
    """
    if path is None:
        logger.warning(
            "worker wake-up socket path too long; other processes' work is found by polling",
            extra={"action": "doorbell_unavailable"},
        )
        return _silent
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock.bind(os.fsencode(path))
    except OSError as exc:
        sock.close()
        logger.warning(
            "worker wake-up socket not bound: %s; other processes' work is found by polling",
            exc,
            extra={"action": "doorbell_unavailable"},
        )
        return _silent
    sock.setblocking(False)
    bound = _identity(path)

    def drain() -> None:
        for _ in range(DRAIN_AT_ONCE):  # every ring so far, one wake-up
            try:
                sock.recv(16)
            except OSError:  # BlockingIOError: nothing more waiting
                break
        on_ring()

    loop.add_reader(sock.fileno(), drain)

    def close() -> None:
        loop.remove_reader(sock.fileno())
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            if _identity(path) == bound:  # not a later worker's socket
                path.unlink()

    return close


def _identity(path: Path) -> tuple[int, int]:
    """Which file this is: an inode number is reused at once after an unlink, its ctime is not."""
    found = os.stat(path)
    return found.st_ino, found.st_ctime_ns
