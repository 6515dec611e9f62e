"""The first admin's password, handed over once, and its file removed once it no longer signs in.

On a terminal the password is shown once. Otherwise (a service, a container) the output goes to
a log that others read and keep (journald), so the password goes to a file only qhook's user can
read, and the output says where. A file left behind after the password was changed would tell
whoever reads the data folder later (a backup, a support bundle) what the admin once used; qhook
removes it as soon as the password in it stops working: at a change through the API, the UI or
the CLI, and at every start.
"""

from __future__ import annotations

import contextlib
import logging
import os

from rich.console import Console

from qhook.context import AppContext
from qhook.errors import Unauthorized
from qhook.services import users

logger = logging.getLogger(__name__)
FILE_NAME = "initial-admin-password"
CHANGE = "change it at /ui/account or with `qhook user set-password admin`"


def hand_over(ctx: AppContext, console: Console, name: str, password: str) -> None:
    if console.is_terminal:
        console.print(
            f"[bold yellow]First start:[/] admin user [bold]{name}[/], password [bold]{password}[/]"
            f" (shown once; {CHANGE})"
        )
        return
    folder = ctx.settings.data_dir
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / FILE_NAME
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a leftover of an earlier database: never written into with another mode
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        handle.write(password + "\n")
    console.print(
        f"First start: admin user {name}; its password is in {path.resolve()} (readable by this user"
        f" only): {CHANGE}; the file goes once the password is changed.",
        markup=False,
    )


def retire(ctx: AppContext) -> bool:
    """Remove the file once its password no longer signs ``admin`` in; True when removed."""
    path = ctx.settings.data_dir / FILE_NAME
    try:
        written = path.read_text().strip()
    except FileNotFoundError:
        return False
    except (OSError, UnicodeError) as exc:  # not ours to judge: left for the operator
        logger.warning(
            "initial password file unreadable", extra={"action": "initial_password", "error": str(exc)}
        )
        return False
    try:
        users.check_password(ctx.db, users.FIRST_ADMIN, written)
    except Unauthorized:
        path.unlink(missing_ok=True)
        logger.info(
            "initial password file removed: the password in it no longer signs in",
            extra={"action": "initial_password", "path": str(path)},
        )
        return True
    return False
