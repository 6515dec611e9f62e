"""``qhook serve``: uvicorn around the app, with the delivery worker and scheduler in the same loop."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Awaitable, Callable
from types import FrameType

import uvicorn
from fastapi import FastAPI
from rich.console import Console

from qhook import heap, initial_password, logline, scheduler
from qhook.api.app import create_app
from qhook.context import AppContext, require_secret_key
from qhook.errors import QhookError
from qhook.services import hub, hub_search, inspector, users
from qhook.store import migrate

console = Console(stderr=True)


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before anything else starts: an address in use or one nothing
    can bind is refused with qhook's own message. Bound by uvicorn, a busy port was found only
    after the database, the first admin and its password file were made and the worker had
    started ("error while attempting to bind", exit 3)."""
    # The family as uvicorn picks it: "localhost" is 127.0.0.1, whatever getaddrinfo lists first.
    wanted = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, wanted, socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (OSError, UnicodeError) as exc:
        raise QhookError(f"cannot listen on {host}:{port}: {exc}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise QhookError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another with QHOOK_PORT or"
            " --port, QHOOK_HOST or --host)"
        ) from exc
    return sock


class EarlyInterrupt:
    """A Ctrl-C from just before the server prints where to open it until uvicorn takes SIGINT
    over, kept instead of raised, and handed to uvicorn by the first start-up hook.

    Python's own SIGINT handler raises KeyboardInterrupt in whatever Python code runs next. In those
    milliseconds that was at times a weakref callback of the garbage collector, whose exceptions
    Python prints ("Exception ignored in ...") and drops: serve started as if never interrupted
    and ran on. Kept here, the signal makes uvicorn stop once it has started, as one during
    start-up does. Installed only then: earlier steps (waiting for PostgreSQL, the migrations)
    stay interruptible at once.
    """

    def __init__(self) -> None:
        self.received = False
        self.server: uvicorn.Server | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received = True

    async def hand_over(self, app: FastAPI) -> None:
        """The first start-up hook: uvicorn's handler is in place by then."""
        if self.received and self.server is not None:
            self.server.handle_exit(signal.SIGINT, None)


def run_server(ctx: AppContext, listening: socket.socket, *, with_worker: bool) -> None:
    """Serve on ``listening`` (from ``listen``) until stopped."""
    logline.configure(ctx.settings.log_level)
    if not ctx.db.is_sqlite:  # SQLite was migrated when the context opened
        migrate.wait_for(ctx.db)
        migrate.require_usable(ctx.db)
    require_secret_key(ctx)
    credentials = users.bootstrap_admin(ctx.db)
    early = EarlyInterrupt()
    # The delivery worker adds its own hook beside the scheduler's.
    hooks: list[Callable[[FastAPI], Awaitable[None]]] = [early.hand_over, scheduler.start_in_app]
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
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, early) if main_thread else None
    try:
        server = _serve(ctx, app, listening, credentials, early)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if lock is not None:
            lock.release()
    # Not started and not stopped by a person: a start-up hook failed (uvicorn logged why). Ctrl-C
    # while it started up was reported as that failure, exit status 3.
    if not server.started and not early.received and not server.should_exit:
        raise SystemExit(3)


def _serve(
    ctx: AppContext,
    app: FastAPI,
    listening: socket.socket,
    credentials: tuple[str, str] | None,
    early: EarlyInterrupt,
) -> uvicorn.Server:
    """Say where to open it (and the first password), then run uvicorn until it stops."""
    host, port = listening.getsockname()[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = ctx.settings.public_url.rstrip("/") or f"http://{shown}:{port}"
    console.print(f"[bold green]qhook is running.[/] Open {base}/ui  (API docs: {base}/api/v1/docs)")
    console.print(f"database: {ctx.db.engine.url.render_as_string(hide_password=True)}")
    if credentials:
        initial_password.hand_over(ctx, console, *credentials)
    else:
        initial_password.retire(ctx)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=ctx.settings.log_level.lower(), access_log=False
    )
    server = uvicorn.Server(config)
    early.server = server
    try:
        server.run(sockets=[listening])
    except KeyboardInterrupt:  # a stop by a person all the same, should one come out this way
        early.received = True
    return server
