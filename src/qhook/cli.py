"""The ``qhook`` command: parse, open, call one service, print. Our errors become a message and exit 1."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import pydantic
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qhook.clock import utcnow
from qhook.context import AppContext, open_context, require_existing_database
from qhook.domain import credentials
from qhook.domain.ids import MAX_BIG_ID, MAX_ID, is_id
from qhook.errors import QhookError
from qhook.settings import Settings
from qhook.store import migrate as migrations

if TYPE_CHECKING:
    from qhook.services.hub import Filters

app = typer.Typer(no_args_is_help=True, help="qhook: quality-results workflows and webhooks.")
user_app = typer.Typer(no_args_is_help=True, help="Manage users.")
apikey_app = typer.Typer(no_args_is_help=True, help="Manage API keys.")
app.add_typer(user_app, name="user")
app.add_typer(apikey_app, name="apikey")

# Piped output (scripts, CI, tests) gets a wide fixed width so tables are not cut to 80 columns.
_PIPED_WIDTH = 200
console = Console(width=None if sys.stdout.isatty() else _PIPED_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else _PIPED_WIDTH)
F = TypeVar("F", bound=Callable[..., Any])


def friendly(func: F) -> F:
    """Turn our errors into one red line and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except QhookError as exc:  # the operator sees why, e.g. the database refused the password
            err_console.print(f"[red]error:[/red] {escape(exc.for_operators)}")
            raise typer.Exit(1) from exc
        except pydantic.ValidationError as exc:  # a bad QHOOK_* setting, named
            for problem in exc.errors():
                name = "_".join(str(p) for p in problem["loc"]).upper()
                name = name if name.startswith("QHOOK_") else "QHOOK_" + name
                message = str(problem["msg"]).removeprefix("Value error, ")
                err_console.print(f"[red]error:[/red] {name}: {escape(message)}")
            raise typer.Exit(1) from exc

    return wrapper  # type: ignore[return-value]


def open_ctx(*, create: bool = False, settings: Settings | None = None) -> AppContext:
    """The database of the settings; only the services (serve, worker) and migrate create it."""
    settings = settings or Settings()
    if not create:
        require_existing_database(settings)
    return open_context(settings)


@app.command()
@friendly
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (QHOOK_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (QHOOK_PORT).", min=1, max=65535)] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="API and UI only; run `qhook worker` apart.")
    ] = False,
) -> None:
    """Start the API, UI, compat API, delivery worker and scheduler in one process."""
    from qhook.server import listen, run_server

    settings = Settings()
    with listen(host or settings.host, port or settings.port) as listening:
        run_server(open_ctx(create=True, settings=settings), listening, with_worker=not no_worker)


@app.command()
@friendly
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Deliveries in flight (QHOOK_WORKER_CONCURRENCY).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Serve Prometheus metrics on this port (QHOOK_WORKER_METRICS_PORT)."
        ),
    ] = None,
    metrics_host: Annotated[
        str | None, typer.Option(help="Address for the metrics server (QHOOK_WORKER_METRICS_HOST).")
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Delivery processes, one per core to use (QHOOK_WORKER_PROCESSES); they split each"
            " endpoint's max_in_flight. Process i serves its metrics on the metrics port + i.",
        ),
    ] = None,
    cpu_affinity: Annotated[
        bool | None,
        typer.Option(
            "--cpu-affinity/--no-cpu-affinity",
            help="Bind process i to the i-th CPU this command may use (QHOOK_WORKER_CPU_AFFINITY; Linux).",
        ),
    ] = None,
) -> None:
    """Run a delivery worker alone (several may share a PostgreSQL database; on SQLite one
    `qhook worker`, whose --processes share the database's worker lock)."""
    from qhook import logline
    from qhook.delivery.worker import serve_worker

    ctx = open_ctx(create=True)  # a service like serve, whichever of the two starts first
    logline.configure(ctx.settings.log_level)
    serve_worker(
        ctx,
        concurrency=concurrency,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        processes=processes,
        cpu_affinity=cpu_affinity,
    )


@app.command()
@friendly
def migrate() -> None:
    """Bring the database schema up to date (run this after upgrading on PostgreSQL)."""
    ctx = open_context(Settings(), migrate_sqlite=False)
    state, before = migrations.schema_state(ctx.db)
    if state == "ahead":
        console.print(
            f"schema at {before}, newer than this qhook's {migrations.head_revision()}: nothing to "
            "migrate (a later qhook migrated it; this one works on it, its migrations only add). "
            "To go back to an older schema, restore the backup taken before that upgrade."
        )
        return
    found = migrations.upgrade(ctx.db)
    now = migrations.current_revision(ctx.db)
    if found == now:
        console.print(f"schema at {now}: already current")
    else:
        console.print(f"schema at {now} (was {found or 'empty'})")


@app.command()
@friendly
def rekey() -> None:
    """Encrypt every stored secret again with the newest key of QHOOK_SECRET_KEY (the first), so
    the older keys can be dropped. Run it once every qhook process runs with "new,old"."""
    from qhook.services import secrets

    count = secrets.rekey(open_ctx(), actor="cli")
    console.print(
        f"{count} secret(s) now encrypted with the newest key; once every qhook process runs with "
        "it, the older keys can be dropped from QHOOK_SECRET_KEY"
    )


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

    ids = _ids(set_ids, "--sets") if set_ids else None
    user = users.create_user(open_ctx().db, name, role, password, ids, actor="cli")
    console.print(f"user {user.name} ({user.role}) created with id {user.id}")


@user_app.command("list")
@friendly
def user_list() -> None:
    """List users (never their passwords)."""
    from qhook.services import users

    table = Table("id", "name", "role", "sets", "active", "created")
    for user in users.list_users(open_ctx().db):
        sets = ",".join(str(i) for i in user.set_ids) if user.set_ids is not None else "all"
        table.add_row(
            str(user.id),
            user.name,
            user.role,
            sets,
            "yes" if user.active else "no",
            f"{user.created_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@user_app.command("set-password")
@friendly
def user_set_password(
    name: str,
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            confirmation_prompt=True,
            hide_input=True,
            help="At least 8 characters; asked for (twice, not shown) when left out",
        ),
    ],
) -> None:
    """Set a user's password (asked for when not given); their UI sessions end."""
    from qhook import initial_password
    from qhook.services import users

    ctx = open_ctx()
    users.update_user(ctx.db, users.user_named(ctx.db, name).id, actor="cli", password=password)
    console.print(f"password of {name} changed")
    if initial_password.retire(ctx):
        path = ctx.settings.data_dir / initial_password.FILE_NAME
        console.print(f"removed {path}: the password in it no longer works")


@user_app.command("update")
@friendly
def user_update(
    name: str,
    role: Annotated[str | None, typer.Option(help="admin, editor or viewer")] = None,
    set_ids: Annotated[
        str | None, typer.Option("--sets", help="Comma-separated set ids the user may use, or 'all'")
    ] = None,
    active: Annotated[
        bool | None,
        typer.Option("--active/--inactive", help="Inactive users' keys and sessions stop working"),
    ] = None,
) -> None:
    """Change a user's role, sets or active flag."""
    from qhook.services import users

    ids: list[int] | users.Keep | None = users.KEEP
    if set_ids is not None:
        ids = None if set_ids.strip().lower() == "all" else _ids(set_ids, "--sets")
    db = open_ctx().db
    user = users.update_user(
        db, users.user_named(db, name).id, actor="cli", role=role, set_ids=ids, active=active
    )
    sets = ",".join(str(i) for i in user.set_ids) if user.set_ids is not None else "all"
    state = "active" if user.active else "inactive"
    console.print(f"user {user.name}: {user.role}, sets {sets}, {state}")


def _ids(text: str, option: str) -> list[int]:
    try:
        found = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise typer.BadParameter(
            f"expected comma-separated ids or 'all', got {text!r}", param_hint=option
        ) from exc
    if not all(is_id(n) for n in found):
        raise typer.BadParameter(f"expected ids from 1 to {MAX_ID}, got {text!r}", param_hint=option)
    return found


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
def apikey_revoke(key_id: Annotated[int, typer.Argument(min=1, max=MAX_ID)]) -> None:
    """Revoke an API key by id."""
    from qhook.services import users

    users.revoke_api_key(open_ctx().db, key_id, actor="cli")
    console.print(f"key {key_id} revoked")


@app.command("import")
@friendly
def import_csv(
    set_id: Annotated[int, typer.Argument(min=1, max=MAX_ID)],
    file: Annotated[Path, typer.Argument(help="CSV with a header of field names (and date, @id)")],
    key_field: Annotated[
        str | None, typer.Option("--key-field", help="Update the result whose field F matches; else create")
    ] = None,
    chunk_size: Annotated[int, typer.Option(help="Rows per transaction", min=1, max=100_000)] = 500,
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
            csv_import.csv_table(lines()),
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


# --- Integration Hub ------------------------------------------------------------------------------

deliveries_app = typer.Typer(no_args_is_help=True, help="Browse the delivery log (Integration Hub).")
app.add_typer(deliveries_app, name="deliveries")


def _moment(value: str | None, name: str) -> datetime | None:
    """ISO 8601; a time without a zone is taken as UTC."""
    from qhook.errors import field_error

    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise field_error(name, "an ISO 8601 time such as 2025-10-02T13:37:00Z") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment else "-"


# The Hub's filters, the same for listing and replaying.
WorkflowOption = Annotated[int | None, typer.Option("--workflow", help="Workflow id", min=1, max=MAX_ID)]
SignalOption = Annotated[int | None, typer.Option("--signal", help="Signal id", min=1, max=MAX_ID)]
SetOption = Annotated[int | None, typer.Option("--set", help="Set id", min=1, max=MAX_ID)]
ResultOption = Annotated[int | None, typer.Option("--result", help="Result id", min=1, max=MAX_ID)]
EndpointOption = Annotated[
    str | None, typer.Option("--endpoint", help="Origin, e.g. https://erp.example.com")
]
ActionOption = Annotated[str | None, typer.Option("--action", help="new modified deleted date manual test")]
SinceOption = Annotated[
    str | None, typer.Option("--since", help="Created at or after (ISO 8601, UTC by default)")
]
UntilOption = Annotated[str | None, typer.Option("--until", help="Created before (ISO 8601)")]
TextOption = Annotated[str | None, typer.Option("--q", "-q", help="Text in the body, e.g. B-1234")]
EventOption = Annotated[
    str | None, typer.Option("--event", help="Event id as receivers get it (evt_...) or the internal id")
]


def _hub_filters(
    status: str | None,
    workflow: int | None,
    signal: int | None,
    set_id: int | None,
    result: int | None,
    endpoint: str | None,
    action: str | None,
    since: str | None,
    until: str | None,
    q: str | None,
    event: str | None,
) -> Filters:
    """The Hub's filters from the options list and replay share."""
    from qhook.services import hub

    return hub.Filters(
        status=status,
        workflow_id=workflow,
        signal_id=signal,
        set_id=set_id,
        result_id=result,
        endpoint=endpoint,
        action=action,
        since=_moment(since, "since"),
        until=_moment(until, "until"),
        q=q,
        event=event,
    )


@deliveries_app.command("list")
@friendly
def deliveries_list(
    status: Annotated[
        str | None, typer.Option(help="pending retrying held succeeded failed cancelled")
    ] = None,
    workflow: WorkflowOption = None,
    signal: SignalOption = None,
    set_id: SetOption = None,
    result: ResultOption = None,
    endpoint: EndpointOption = None,
    action: ActionOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    q: TextOption = None,
    event: EventOption = None,
    limit: Annotated[int, typer.Option(help="Rows to show", min=1, max=500)] = 50,
    cursor: Annotated[
        str | None, typer.Option(help="Continue after a page: the next cursor a previous list printed")
    ] = None,
) -> None:
    """List deliveries, newest first; a full page ends with the cursor of the next."""
    from qhook.services import hub

    filters = _hub_filters(status, workflow, signal, set_id, result, endpoint, action, since, until, q, event)
    page, next_cursor = hub.list_deliveries(open_ctx(), filters, limit=limit, cursor=cursor)
    table = Table("id", "status", "created", "workflow", "result", "action", "url", "tries", "last", "hint")
    for d in page:
        last = str(d.last_status_code) if d.last_status_code else (d.last_error_kind or "-")
        table.add_row(
            str(d.id),
            d.status,
            _when(d.created_at),
            str(d.workflow_id or "-"),
            str(d.result_id or "-"),
            d.action,
            escape(credentials.shown_url(d.url)),  # "[redacted]" is no markup tag
            str(d.attempt_count),
            last,
            d.hint or (_HELD if d.status == "held" else ""),
        )
    console.print(table)
    more = "; for the next page run again with the same filters and --cursor below" if next_cursor else ""
    console.print(f"{_deliveries(len(page))}{more}")
    if next_cursor:
        # The cursor alone at the end of the last line, for scripts (`tail -1 | awk '{print $NF}'`).
        console.print(f"next cursor: {next_cursor}", markup=False, soft_wrap=True)


@deliveries_app.command("show")
@friendly
def deliveries_show(delivery_id: Annotated[int, typer.Argument(min=1, max=MAX_BIG_ID)]) -> None:
    """One delivery: its request (headers redacted, body) and every attempt with its hint."""
    from qhook.services import hub

    found = hub.delivery_detail(open_ctx(), delivery_id)
    d = found.delivery
    console.print(f"[bold]delivery {d.id}[/bold]  {d.status}  webhook-id {d.webhook_id}")
    console.print(f"POST {credentials.shown_url(d.url)}", markup=False)
    console.print(
        f"workflow {d.workflow_id}  signal {d.signal_id}  set {d.set_id}  result {d.result_id}  "
        f"action {d.action}  created {_when(d.created_at)}  next attempt {_when(d.next_attempt_at)}"
    )
    if d.hint:
        console.print(f"[yellow]hint:[/yellow] {escape(d.hint)}", highlight=False)
    if found.waiting:
        console.print(f"[cyan]waiting:[/cyan] {escape(found.waiting)}", highlight=False)
    for name, value in found.request_headers.items():
        console.print(f"  {name}: {value}", markup=False)
    console.print(found.body, markup=False, highlight=False, soft_wrap=True)
    table = Table("#", "trigger", "started", "ms", "status", "error", "hint")
    for a in found.attempts:
        table.add_row(
            str(a.number),
            a.trigger,
            _when(a.started_at),
            str(a.duration_ms) if a.duration_ms is not None else "-",
            str(a.status_code) if a.status_code is not None else "-",
            a.error_kind or "",
            a.hint or "",
        )
    console.print(table)


endpoints_app = typer.Typer(
    no_args_is_help=True, help="Endpoints (origins) qhook sends to: state, pause, resume, probe."
)
app.add_typer(endpoints_app, name="endpoints")


@endpoints_app.command("list")
@friendly
def endpoints_list() -> None:
    """Every origin: its state, the last hour's success and what waits in its queue."""
    from qhook.services import hub

    table = Table("endpoint", "state", "until / since", "last hour", "queued")
    for e in hub.endpoint_summaries(open_ctx()):
        hour = e.last_hour
        share = f"{hour.succeeded / hour.attempts:.0%} of {hour.attempts}" if hour.attempts else "-"
        moment = e.throttled_until or e.circuit_open_since
        table.add_row(e.origin, e.state, _when(moment) if moment else "", share, str(e.queue_depth))
    console.print(table)


@endpoints_app.command("pause")
@friendly
def endpoints_pause(origin: Annotated[str, typer.Argument(help="e.g. https://erp.example.com")]) -> None:
    """No new attempts to this origin until resumed (in-flight ones finish)."""
    from qhook.services import hub

    ctx = open_ctx()
    row = hub.set_endpoint_paused(ctx, origin, paused=True, actor="cli")
    console.print(f"{row.origin}: paused")


@endpoints_app.command("resume")
@friendly
def endpoints_resume(origin: Annotated[str, typer.Argument(help="e.g. https://erp.example.com")]) -> None:
    """Let attempts go again: ends an operator's pause; on an endpoint no one paused, a receiver's
    Retry-After wait."""
    from qhook.services import hub

    ctx = open_ctx()
    row = hub.set_endpoint_paused(ctx, origin, paused=False, actor="cli")
    waiting = (
        f" (still waiting for Retry-After until {_when(row.throttled_until)} UTC; resume again to end it)"
    )
    still = row.throttled_until is not None and row.throttled_until > utcnow()
    console.print(f"{row.origin}: resumed{waiting if still else ''}")


@endpoints_app.command("probe")
@friendly
def endpoints_probe(origin: Annotated[str, typer.Argument(help="e.g. https://erp.example.com")]) -> None:
    """Probe an open circuit now (the receiver is fixed) instead of after the cool-off."""
    from qhook.services import hub

    row = hub.probe_endpoint(open_ctx(), origin, actor="cli")
    console.print(f"{row.origin}: a probe goes with the next maintenance tick (within seconds)")


_HELD = "held: its endpoint's circuit is open (qhook endpoints list; deliveries show ID says more)"


def _deliveries(count: int) -> str:
    return "1 delivery" if count == 1 else f"{count:,} deliveries"


emails_app = typer.Typer(no_args_is_help=True, help="The e-mails of e-mail signals: status, errors, resend.")
app.add_typer(emails_app, name="emails")


@emails_app.command("list")
@friendly
def emails_list(
    status: Annotated[str | None, typer.Option(help="pending sent failed")] = None,
    limit: Annotated[int, typer.Option(help="Rows to show", min=1, max=500)] = 50,
) -> None:
    """E-mails newest first, with the mail server's last answer for those not sent."""
    from qhook.services import emails

    page, _ = emails.list_emails(open_ctx(), status=status, limit=limit)
    table = Table("id", "status", "created", "to", "subject", "tries", "last error")
    for e in page:
        table.add_row(
            str(e.id),
            e.status,
            _when(e.created_at),
            ", ".join(e.recipients),
            e.subject,
            str(e.attempt_count),
            e.last_error or "",
        )
    console.print(table)
    console.print(f"{len(page)} e-mails")


@emails_app.command("resend")
@friendly
def emails_resend(email_id: Annotated[int, typer.Argument(min=1, max=MAX_BIG_ID)]) -> None:
    """Send a failed e-mail once more (the worker's mailer takes it within seconds)."""
    from qhook.services import emails

    email = emails.resend(open_ctx(), email_id, actor="cli")
    console.print(f"e-mail {email.id} to {', '.join(email.recipients)}: queued again")


@app.command("replay")
@friendly
def replay(
    status: Annotated[
        str | None,
        typer.Option(help="failed, succeeded or cancelled, or several comma-separated (default: failed)"),
    ] = None,
    workflow: WorkflowOption = None,
    signal: SignalOption = None,
    set_id: SetOption = None,
    result: ResultOption = None,
    endpoint: EndpointOption = None,
    action: ActionOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    q: TextOption = None,
    event: EventOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be queued")] = False,
) -> None:
    """Queue finished deliveries again (same body and webhook-id); what a replay queued and is not
    finished yet is not queued again (once it has finished, a second run sends it again).

    At least one filter; --dry-run counts first."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from qhook.services import hub

    filters = _hub_filters(status, workflow, signal, set_id, result, endpoint, action, since, until, q, event)
    if filters.is_empty():
        raise QhookError(
            "give at least one filter to replay: --status, --workflow, --signal, --set, --result, "
            "--action, --endpoint, --since, --until, --q or --event (--dry-run counts first)"
        )
    ctx = open_ctx()
    total = hub.count_replayable(ctx, filters)
    if dry_run:
        console.print(f"would queue {_deliveries(total)}")
        return
    columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err_console) as progress:
        task = progress.add_task("replay", total=total)
        queued = hub.replay(ctx, filters, actor="cli", on_progress=lambda n: progress.advance(task, n))
    console.print(f"{_deliveries(queued)} queued")


@app.command("purge")
@friendly
def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would go")] = False,
) -> None:
    """Delete deliveries past retention (QHOOK_RETENTION_DAYS, QHOOK_FAILED_RETENTION_DAYS), and the
    endpoint log, error reports and e-mails older than QHOOK_FAILED_RETENTION_DAYS."""
    from qhook.services import hub

    report = hub.purge(open_ctx(), dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    parts = ", ".join(f"{n} {status}" for status, n in report.deliveries.items())
    others = ", ".join(f"{n} {name}" for name, n in report.records.items())
    attempts = "1 attempt" if report.attempts == 1 else f"{report.attempts:,} attempts"
    console.print(f"{verb} {_deliveries(report.total)} ({parts}) and {attempts}; {others}")


@app.command()
@friendly
def demo(
    url: Annotated[
        str | None,
        typer.Option(help="The running server (default QHOOK_PUBLIC_URL, else http://127.0.0.1:QHOOK_PORT)"),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(help="An admin API key; default: a key of the 'demo' admin, made and revoked"),
    ] = None,
) -> None:
    """Show the whole loop: a set, a workflow to an inspector bin, a released batch, the signed webhook."""
    from qhook import demo as demo_mod

    settings = Settings()
    revoke = None
    if key is None:
        require_existing_database(settings)
        key, revoke = demo_mod.demo_key(settings)
    try:
        outcome = demo_mod.run_demo(demo_mod.Api(url or demo_mod.default_url(settings), key))
    finally:
        if revoke is not None:
            revoke()
    demo_mod.show(outcome, console)


schema_app = typer.Typer(no_args_is_help=True, help="Print the JSON Schemas qhook publishes.")
app.add_typer(schema_app, name="schema")


@schema_app.command("payload")
def schema_payload() -> None:
    """The JSON Schema (2020-12) of the webhook envelope body; see docs/payload.md."""
    from qhook.schemas import payload_schema_text

    sys.stdout.write(payload_schema_text())
