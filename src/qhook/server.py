"""``qhook serve``: uvicorn around the app, with the delivery worker and scheduler in the same loop."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Awaitable, Callable

import uvicorn
from fastapi import FastAPI
from rich.console import Console

from qhook import heap, logline, scheduler
from qhook.api.app import create_app
from qhook.context import AppContext, require_secret_key
from qhook.errors import QhookError
from qhook.services import hub, hub_search, inspector, users
from qhook.store import migrate

console = Console(stderr=True)
INITIAL_PASSWORD_FILE = "initial-admin-password"


def _hand_over(ctx: AppContext, name: str, password: str) -> None:
    """The first admin's password: on a terminal, shown once. Otherwise (a service, a container)
    the output goes to a log that others read and keep (journald), so the password goes to a file
    only qhook's user can read, and the output says where."""
    change = "change it at /ui/account or with `qhook user set-password admin`"
    if console.is_terminal:
        console.print(
            f"[bold yellow]First start:[/] admin user [bold]{name}[/], password [bold]{password}[/]"
            f" (shown once; {change})"
        )
        return
    folder = ctx.settings.data_dir
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / INITIAL_PASSWORD_FILE
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a leftover of an earlier database: never written into with another mode
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        handle.write(password + "\n")
    console.print(
        f"First start: admin user {name}; its password is in {path.resolve()} (readable by this user"
        f" only): {change}, then delete the file.",
        markup=False,
    )


def _check_address(host: str, port: int) -> None:
    """Refuse an address nothing can bind before saying "qhook is running" (it said so, then
    uvicorn failed with "Name or service not known")."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise QhookError(f"cannot listen on {host}:{port}: {exc}") from exc


def run_server(ctx: AppContext, *, host: str | None, port: int | None, with_worker: bool) -> None:
    host = host or ctx.settings.host
    port = port or ctx.settings.port
    _check_address(host, port)
    logline.configure(ctx.settings.log_level)
    if not ctx.db.is_sqlite:  # SQLite was migrated when the context opened
        migrate.wait_for(ctx.db)
        migrate.require_usable(ctx.db)
    require_secret_key(ctx)
    credentials = users.bootstrap_admin(ctx.db)
    # The delivery worker adds its own hook beside the scheduler's.
    hooks: list[Callable[[FastAPI], Awaitable[None]]] = [scheduler.start_in_app]
    lock = None
    if with_worker:
        from qhook.delivery import worker

        if ctx.db.is_sqlite:
            # Held while this function runs: a lock object nobody kept was collected at once, its
            # file closed and its flock gone, and a `qhook worker` beside this serve ran too.
            lock = worker.SingleWorkerLock(ctx)
            lock.acquire()
        hooks.append(worker.start_in_app)
    hooks.append(hub.start_retention_in_app)  # retention purge, in small batches
    hooks.append(inspector.start_purge_in_app)  # expired inspector bins
    hooks.append(hub_search.start_in_app)  # SQLite: the body-search index, behind the writes
    hooks.append(heap.freeze_in_app)  # last: start-up objects leave the collector's full sweeps
    app = create_app(ctx, lifespan_hooks=hooks)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = ctx.settings.public_url.rstrip("/") or f"http://{shown}:{port}"
    console.print(f"[bold green]qhook is running.[/] Open {base}/ui  (API docs: {base}/api/v1/docs)")
    console.print(f"database: {ctx.db.engine.url.render_as_string(hide_password=True)}")
    if credentials:
        _hand_over(ctx, *credentials)
    try:
        uvicorn.run(app, host=host, port=port, log_level=ctx.settings.log_level.lower(), access_log=False)
    finally:
        if lock is not None:
            lock.release()
