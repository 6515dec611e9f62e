"""The ``qhook`` command: parse, open, call one service, print. Our errors become a message and exit 1."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from qhook.context import AppContext, open_context
from qhook.errors import QhookError
from qhook.settings import Settings
from qhook.store import migrate as migrations

app = typer.Typer(no_args_is_help=True, help="qhook: quality-results workflows and webhooks.")
user_app = typer.Typer(no_args_is_help=True, help="Manage users.")
apikey_app = typer.Typer(no_args_is_help=True, help="Manage API keys.")
app.add_typer(user_app, name="user")
app.add_typer(apikey_app, name="apikey")

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly(func: F) -> F:
    """Turn our errors into one red line and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except QhookError as exc:
            err_console.print(f"[red]error:[/red] {exc.message}")
            raise typer.Exit(1) from exc

    return wrapper  # type: ignore[return-value]


def open_ctx() -> AppContext:
    return open_context(Settings())


@app.command()
@friendly
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (QHOOK_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (QHOOK_PORT).")] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="API and UI only; run `qhook worker` apart.")
    ] = False,
) -> None:
    """Start the API, UI, compat API, delivery worker and scheduler in one process."""
    from qhook.server import run_server

    run_server(open_ctx(), host=host, port=port, with_worker=not no_worker)


@app.command()
@friendly
def migrate() -> None:
    """Bring the database schema up to date (run this after upgrading on PostgreSQL)."""
    ctx = open_context(Settings(), migrate_sqlite=False)
    before = migrations.current_revision(ctx.db)
    migrations.upgrade(ctx.db)
    console.print(f"schema at {migrations.current_revision(ctx.db)} (was {before or 'empty'})")


@user_app.command("create")
@friendly
def user_create(
    name: str,
    role: Annotated[str, typer.Option(help="admin, editor or viewer")],
    password: Annotated[str | None, typer.Option(help="For the UI; at least 8 characters")] = None,
    set_ids: Annotated[
        str | None, typer.Option("--sets", help="Comma-separated set ids the user may use")
    ] = None,
) -> None:
    """Create a user."""
    from qhook.services import users

    ids = [int(s) for s in set_ids.split(",")] if set_ids else None
    user = users.create_user(open_ctx().db, name, role, password, ids, actor="cli")
    console.print(f"user {user.name} ({user.role}) created with id {user.id}")


@apikey_app.command("create")
@friendly
def apikey_create(user: str, label: Annotated[str, typer.Option(help="What the key is for")] = "") -> None:
    """Create an API key; the key alone is the last line of stdout."""
    from qhook.services import users

    key, plain = users.create_api_key(open_ctx().db, user, label, actor="cli")
    err_console.print(f"key {key.id} for {user} created; it is shown once:")
    sys.stdout.write(plain + "\n")


@apikey_app.command("list")
@friendly
def apikey_list(user: Annotated[str | None, typer.Option(help="Only this user's keys")] = None) -> None:
    """List API keys (never the keys themselves)."""
    from qhook.services import users

    table = Table("id", "user", "label", "prefix", "created", "last used", "revoked")
    for key in users.list_api_keys(open_ctx().db, user):
        table.add_row(
            str(key.id),
            key.user_name,
            key.label,
            key.prefix + "…",
            f"{key.created_at:%Y-%m-%d %H:%M}",
            f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "-",
            f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "-",
        )
    console.print(table)


@apikey_app.command("revoke")
@friendly
def apikey_revoke(key_id: int) -> None:
    """Revoke an API key by id."""
    from qhook.services import users

    users.revoke_api_key(open_ctx().db, key_id, actor="cli")
    console.print(f"key {key_id} revoked")


@app.command("import")
@friendly
def import_csv(
    set_id: int,
    file: Annotated[Path, typer.Argument(help="CSV with a header of field names (and date, @id)")],
    key_field: Annotated[
        str | None, typer.Option("--key-field", help="Update the result whose field F matches; else create")
    ] = None,
    chunk_size: Annotated[int, typer.Option(help="Rows per transaction", min=1)] = 500,
) -> None:
    """Import results from a CSV file; bad rows are reported by row number, good rows are stored.

    Exits 1 when any row could not be stored.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from qhook.errors import NotFound
    from qhook.services import csv_import

    if not file.is_file():
        raise NotFound(f"{file}: no such file")
    ctx = open_ctx()
    columns = (TextColumn("importing"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with file.open("rb") as stream, Progress(*columns, console=err_console) as progress:
        task = progress.add_task("import", total=file.stat().st_size)

        def lines() -> Iterator[bytes]:
            for line in stream:
                progress.advance(task, len(line))
                yield line

        def report(error: csv_import.RowError) -> None:
            progress.console.print(
                f"[red]row {error.number}[/red] (line {error.line}): {error.message}", soft_wrap=True
            )

        summary = csv_import.import_rows(
            ctx,
            set_id,
            csv_import.csv_rows(lines()),
            key_field=key_field,
            chunk_size=chunk_size,
            on_error=report,
        )
    console.print(
        f"{summary.stored} row(s) stored ({summary.created} created, {summary.updated} updated), "
        f"{len(summary.errors)} row(s) failed"
    )
    if summary.errors:
        raise typer.Exit(1)
