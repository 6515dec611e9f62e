"""What a process holds once: settings, database, secret box, and the worker's wake-up call."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from qhook.crypto import SecretBox, load_or_create_key, require_opens
from qhook.errors import QhookError, StoreError
from qhook.settings import Settings
from qhook.store import migrate
from qhook.store.db import Database, sqlite_file


def _no_wake() -> None:
    """No worker in this process: PostgreSQL's NOTIFY, SQLite's doorbell or polling finds the work."""


@dataclass
class AppContext:
    settings: Settings
    db: Database
    box: SecretBox
    # After a commit that queued work: the worker in this process, and on PostgreSQL a NOTIFY to
    # the others (its own small transaction); on SQLite the doorbell of the one worker elsewhere.
    wake: Callable[[], None] = field(default=_no_wake)
    # Only the worker in this process: for transactions that insert deliveries, whose insert
    # NOTIFYs the others itself on PostgreSQL (a trigger), so a write costs no second transaction.
    wake_here: Callable[[], None] = field(default=_no_wake)


def open_context(settings: Settings, *, migrate_sqlite: bool = True) -> AppContext:
    """Open the database (migrating the embedded SQLite default) and the secret box."""
    try:
        db = Database(settings.resolved_database_url, pool_size=settings.db_pool_size)
    except OSError as exc:  # the SQLite file or its folder cannot be made (read-only, a file)
        where = exc.filename or settings.data_dir
        raise QhookError(
            f"cannot create the SQLite database at {where}: {exc.strerror or exc} (QHOOK_DATA_DIR, or"
            " QHOOK_DATABASE_URL)"
        ) from exc
    _require_writable_folder(db)
    if migrate_sqlite and db.is_sqlite:
        migrate.upgrade(db)
    secret = settings.secret_key.get_secret_value() if settings.secret_key else None
    try:
        box = SecretBox(secret or load_or_create_key(settings.data_dir))
    except OSError as exc:
        db.dispose()
        raise QhookError(
            f"cannot read or make the secret key in {exc.filename or settings.data_dir}:"
            f" {exc.strerror or exc} (set QHOOK_SECRET_KEY, or QHOOK_DATA_DIR to a writable folder)"
        ) from exc
    context = AppContext(settings=settings, db=db, box=box)
    if db.is_sqlite:
        from qhook.delivery import doorbell

        context.wake = context.wake_here = doorbell.ringer(doorbell.path_for(db.file, settings.data_dir))
    else:
        context.wake = _notify_wake(db)
    return context


def _require_writable_folder(db: Database) -> None:
    """SQLite writes its -wal and -shm files beside the database: in a read-only folder it only
    said "Database unavailable: unable to open database file"."""
    if db.file is None:
        return
    folder = db.file.resolve().parent
    if not os.access(folder, os.W_OK | os.X_OK) or not os.access(db.file, os.R_OK | os.W_OK):
        db.dispose()
        raise QhookError(
            f"the SQLite database {db.file.resolve()} and its folder must be writable by this user"
            " (SQLite writes its -wal and -shm files beside it): check QHOOK_DATA_DIR and the"
            " folder's permissions"
        )


def require_existing_database(settings: Settings) -> None:
    """For commands that only use a database (the CLI but serve, worker, migrate): on SQLite the
    file must exist. A command started in another folder opened a new, empty ./var/qhook.db (and
    a new secret key), and answered "0 deliveries" or "no user named 'admin'"."""
    path = sqlite_file(settings.resolved_database_url)
    if path is not None and not path.exists():
        raise QhookError(
            f"no qhook database at {path.resolve()}: is qhook running (make run, or qhook serve)? "
            "Start this command in the folder it runs in, or set QHOOK_DATA_DIR (or "
            "QHOOK_DATABASE_URL) as it has them"
        )


def require_secret_key(ctx: AppContext) -> None:
    """At the start of ``qhook serve`` and ``qhook worker``: raise when QHOOK_SECRET_KEY does not
    open the secrets stored here (a database that cannot be reached yet is left to its own check)."""
    from qhook.store import secrets

    try:
        with ctx.db.reading() as tx:
            found = list(secrets.stored(tx))
    except StoreError:
        return
    if ctx.settings.secret_key:
        source = "QHOOK_SECRET_KEY"
    else:  # it named QHOOK_SECRET_KEY although none was set, and not the file that was used
        key_file = ctx.settings.data_dir / "secret.key"
        source = f"The key in {key_file.resolve()} (QHOOK_SECRET_KEY is not set; made there when none was)"
    require_opens(ctx.box, found, source=source)


def _notify_wake(db: Database) -> Callable[[], None]:
    """On PostgreSQL every commit that wrote deliveries also wakes ``qhook worker`` processes."""
    from qhook.store import queue

    def wake() -> None:
        try:
            with db.transaction() as tx:
                queue.notify(tx)
        except Exception:  # best effort: workers poll as the fallback
            logging.getLogger(__name__).warning("NOTIFY failed", extra={"action": "notify_failed"})

    return wake
