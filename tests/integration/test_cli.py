"""The ``qhook`` command in-process (Typer's CliRunner) against SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest
from typer.testing import CliRunner, Result

from qhook.cli import app
from qhook.context import AppContext
from qhook.services import results as result_service
from qhook.services import sets as set_service
from qhook.store import migrate
from qhook.store.db import Database
from tests.conftest import TEST_SECRET_KEY, auth


def one_line(text: str) -> str:
    """Rich wraps long messages at the terminal width; compare them unwrapped."""
    return " ".join(text.split())


@pytest.fixture
def run(db_url: str, tmp_path: Path, ctx: AppContext):  # type: ignore[no-untyped-def]
    """run(*args, database_url=None) -> Result, with QHOOK_* pointing at the test database."""
    runner = CliRunner()

    def _run(*args: str, database_url: str | None = None) -> Result:
        env = {
            "QHOOK_DATABASE_URL": database_url or db_url,
            "QHOOK_DATA_DIR": str(tmp_path / "var"),
            "QHOOK_SECRET_KEY": TEST_SECRET_KEY,
        }
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    return _run


def test_user_and_key_lifecycle(run, ctx: AppContext) -> None:  # type: ignore[no-untyped-def]
    created = run("user", "create", "bob", "--role", "editor", "--password", "long-enough")
    assert created.exit_code == 0, created.output
    assert "user bob (editor) created" in created.stdout
    key = run("apikey", "create", "bob", "--label", "erp")
    assert key.exit_code == 0, key.output
    plain = key.stdout.strip().splitlines()[-1]
    assert plain.startswith("qhk_") and " " not in plain
    listed = run("apikey", "list")
    assert listed.exit_code == 0
    assert "bob" in listed.stdout and "erp" in listed.stdout and plain not in listed.stdout


async def test_created_key_works_against_the_api(run, client: httpx.AsyncClient) -> None:  # type: ignore[no-untyped-def]
    run("user", "create", "bob", "--role", "viewer")
    plain = run("apikey", "create", "bob").stdout.strip().splitlines()[-1]
    me = await client.get("/api/v1/me", headers=auth(plain))
    assert me.status_code == 200
    assert me.json()["name"] == "bob"
    compat = await client.get("/api/getAllSets", params={"access_token": plain})
    assert compat.status_code == 200
    key_id = next(line for line in run("apikey", "list").stdout.splitlines() if "bob" in line).split()[1]
    revoked = run("apikey", "revoke", key_id)
    assert revoked.exit_code == 0 and f"key {key_id} revoked" in revoked.stdout
    assert (await client.get("/api/v1/me", headers=auth(plain))).status_code == 401


def test_errors_exit_1_with_a_message(run) -> None:  # type: ignore[no-untyped-def]
    bad_role = run("user", "create", "bob", "--role", "wizard")
    assert bad_role.exit_code == 1
    assert "error:" in one_line(bad_role.stderr) and "role" in one_line(bad_role.stderr)
    short = run("user", "create", "bob", "--role", "viewer", "--password", "short")
    assert short.exit_code == 1 and "at least 8 characters" in one_line(short.stderr)
    run("user", "create", "bob", "--role", "viewer")
    twice = run("user", "create", "bob", "--role", "viewer")
    assert twice.exit_code == 1 and "exists already" in one_line(twice.stderr)
    nobody = run("apikey", "create", "nobody")
    assert nobody.exit_code == 1 and "error:" in one_line(nobody.stderr)
    missing_key = run("apikey", "revoke", "9999")
    assert missing_key.exit_code == 1 and "error:" in one_line(missing_key.stderr)


def test_migrate_brings_a_fresh_database_to_head(run, db_url: str, tmp_path: Path, request) -> None:  # type: ignore[no-untyped-def]
    if db_url.startswith("sqlite"):
        fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        server = request.getfixturevalue("pg_server")
        with psycopg.connect(server.url("postgres").replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("CREATE DATABASE cli_fresh")
        fresh = server.url("cli_fresh")
    result = run("migrate", database_url=fresh)
    assert result.exit_code == 0, result.output
    assert "(was empty)" in result.stdout
    database = Database(fresh)
    try:
        assert migrate.is_current(database)
    finally:
        database.dispose()
    again = run("migrate", database_url=fresh)
    assert again.exit_code == 0 and "already current" in again.stdout, again.stdout


def test_import_stores_good_rows_and_reports_bad_ones(run, ctx: AppContext, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    current = set_service.create_set(
        ctx.db,
        name="Batch release",
        fields=[
            {"name": "batchnumber_", "type": "text", "required": True},
            {"name": "ph_", "type": "number"},
            {"name": "status_", "type": "list", "options": ["draft", "released"]},
        ],
        actor="tests",
    )
    csv_file = tmp_path / "results.csv"
    csv_file.write_text(
        "batchnumber_,ph_,status_,date\n"
        "B-1,7.1,draft,2025-10-01 08:00:00\n"
        "B-2,acid,draft,\n"
        '"B-3\nsecond line",6,released,\n'
        ",5,draft,\n"
        "B-5,5,unknown,\n"
        "B-6,5.5,,\n"
        "B-\x007,5,draft,\n",  # PostgreSQL cannot store a NUL: refused on both, naming the column
        encoding="utf-8",
    )
    result = run("import", str(current.id), str(csv_file), "--chunk-size", "2")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("row ")]
    assert len(errors) == 4
    assert errors[0].startswith("row 2 (line 3):") and "ph_" in errors[0]
    assert errors[1].startswith("row 4 (line 6):") and "batchnumber_" in errors[1]
    assert errors[2].startswith("row 5 (line 7):") and "status_" in errors[2]
    assert errors[3].startswith("row 7 (line 9): batchnumber_: text without NUL characters")
    assert "3 row(s) stored (3 created, 0 updated), 4 row(s) failed" in result.stdout
    _, stored = result_service.list_results(ctx.db, current.id, sort=[("id", False)])
    assert [r.values["batchnumber_"] for r in stored] == ["B-1", "B-3\nsecond line", "B-6"]
    assert stored[0].date.strftime("%Y-%m-%d %H:%M:%S") == "2025-10-01 08:00:00"

    update_file = tmp_path / "update.csv"
    update_file.write_text("\ufeffbatchnumber_,ph_\nB-1,8\nB-7,9\n", encoding="utf-8")
    updated = run("import", str(current.id), str(update_file), "--key-field", "batchnumber_")
    assert updated.exit_code == 0, updated.output
    assert "2 row(s) stored (1 created, 1 updated), 0 row(s) failed" in updated.stdout
    _, after = result_service.list_results(ctx.db, current.id, sort=[("id", False)])
    assert after[0].values == {"batchnumber_": "B-1", "ph_": 8.0, "status_": 1}
    assert after[0].version == 2 and len(after) == 4


def test_import_reports_a_quote_left_open(run, ctx: AppContext, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A quote left open took every line after it into one cell: stored, and "0 row(s) failed"."""
    current = set_service.create_set(ctx.db, name="Q", fields=[{"name": "a_", "type": "text"}], actor="t")
    csv_file = tmp_path / "open.csv"
    csv_file.write_text('a_\nfine\n"unterminated,1\nnext\n', encoding="utf-8")
    result = run("import", str(current.id), str(csv_file))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("row ")]
    assert len(errors) == 1 and errors[0] == (
        "row 2 (line 3): not readable as CSV from this line on (unexpected end of data): a quote left open?"
    )
    assert "1 row(s) stored (1 created, 0 updated), 1 row(s) failed" in result.stdout
    _, stored = result_service.list_results(ctx.db, current.id)
    assert [r.values["a_"] for r in stored] == ["fine"]


def test_import_refuses_unknown_set_file_or_key_field(run, ctx: AppContext, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    current = set_service.create_set(ctx.db, name="S", fields=[{"name": "a_", "type": "text"}], actor="t")
    csv_file = tmp_path / "a.csv"
    csv_file.write_text("a_\nx\n", encoding="utf-8")
    no_set = run("import", "9999", str(csv_file))
    assert no_set.exit_code == 1 and "no such set" in one_line(no_set.stderr)
    no_file = run("import", str(current.id), str(tmp_path / "missing.csv"))
    assert no_file.exit_code == 1 and "missing.csv: no such file" in one_line(no_file.stderr)
    no_field = run("import", str(current.id), str(csv_file), "--key-field", "b_")
    assert no_field.exit_code == 1 and "has no active field 'b_'" in one_line(no_field.stderr)
    set_service.update_set(ctx, current.id, fields=[{"name": "k_", "type": "text"}], actor="t")
    no_column = run("import", str(current.id), str(csv_file), "--key-field", "k_")
    assert no_column.exit_code == 1 and "the header has no column 'k_'" in one_line(no_column.stderr)
    set_service.update_set(ctx, current.id, fields=[{"name": "k_", "active": False}], actor="t")
    inactive = run("import", str(current.id), str(csv_file), "--key-field", "k_")
    assert inactive.exit_code == 1 and "has no active field 'k_'" in one_line(inactive.stderr)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        # A typo'd column: its empty cells were dropped as "no value" and the rows stored without it.
        ("a_,statsu_\nx,\ny,\n", "the header's column 'statsu_' is no field of set"),
        ("a_,gone_\nx,\n", "the header's column 'gone_' is a deactivated field"),
        ("a_,a_\nx,y\n", "the header names the column 'a_' twice"),
        ("", "the file is empty: its first line must be a header of field names"),
        ('"a_\nx\n', "the header (line 1) is not readable as CSV"),
    ],
)
def test_import_checks_the_header_before_storing_anything(  # type: ignore[no-untyped-def]
    run, ctx: AppContext, tmp_path: Path, text: str, says: str
) -> None:
    current = set_service.create_set(
        ctx.db,
        name="S",
        fields=[{"name": "a_", "type": "text"}, {"name": "gone_", "type": "text", "active": False}],
        actor="t",
    )
    csv_file = tmp_path / "h.csv"
    csv_file.write_text(text, encoding="utf-8")
    result = run("import", str(current.id), str(csv_file))
    assert result.exit_code == 1, result.output
    assert says in one_line(result.stderr)
    _, stored = result_service.list_results(ctx.db, current.id)
    assert stored == []
    # A column without a name (a spreadsheet's trailing separator), date and @id are fine.
    csv_file.write_text("a_,date,\nx,2025-10-01 08:00:00,\n", encoding="utf-8")
    fine = run("import", str(current.id), str(csv_file))
    assert fine.exit_code == 0, fine.output
    assert "1 row(s) stored (1 created, 0 updated), 0 row(s) failed" in fine.stdout


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("import", str(2**31), "x.csv"), "set_id"),
        (("replay", "--workflow", str(2**63)), "--workflow"),
        (("deliveries", "list", "--set", str(2**31)), "--set"),
        (("deliveries", "show", str(2**63)), "delivery_id"),
        (("apikey", "revoke", str(2**31)), "key_id"),
        (("user", "create", "bob", "--role", "viewer", "--sets", str(2**31)), "--sets"),
    ],
)
def test_ids_beyond_their_column_are_a_usage_error(run, args: tuple[str, ...], names: str) -> None:  # type: ignore[no-untyped-def]
    # They were tracebacks: OverflowError from SQLite's driver, "integer out of range" from PostgreSQL.
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert names in one_line(result.output) and "Traceback" not in result.output


def test_a_command_started_elsewhere_finds_no_database_and_makes_none(tmp_path: Path) -> None:
    """From another folder the CLI opened a new, empty ./var/qhook.db and a new secret key, and
    answered "0 deliveries" or "no user named 'admin'"."""
    elsewhere = tmp_path / "elsewhere"
    env = {"QHOOK_DATA_DIR": str(elsewhere / "var"), "QHOOK_DATABASE_URL": "", "QHOOK_SECRET_KEY": ""}
    for args in (
        ["deliveries", "list"],
        ["user", "list"],
        ["apikey", "create", "admin"],
        ["demo"],
    ):
        done = CliRunner().invoke(app, args, env=env, catch_exceptions=False)
        assert done.exit_code == 1, (args, done.output)
        assert f"no qhook database at {(elsewhere / 'var' / 'qhook.db').resolve()}" in done.output, args
    assert not elsewhere.exists()
    made = CliRunner().invoke(app, ["migrate"], env=env, catch_exceptions=False)  # migrate makes one
    assert made.exit_code == 0, made.output
    assert (elsewhere / "var" / "qhook.db").exists()


def test_bad_addresses_and_sizes_are_refused_before_anything_starts(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """serve --port 99999 said "qhook is running" and bound another port; --host 999.1.1.1 said so
    too and then failed; import --chunk-size 99999999999999999999 was a traceback."""
    port = run("serve", "--port", "99999")
    assert port.exit_code == 2 and "--port" in port.output
    host = run("serve", "--host", "999.1.1.1", "--port", "18651")
    assert host.exit_code == 1
    assert "cannot listen on 999.1.1.1:18651" in host.output and "qhook is running" not in host.output
    csv = tmp_path / "rows.csv"
    csv.write_text("batchnumber_\nB-1\n")
    chunk = run("import", "1", str(csv), "--chunk-size", "99999999999999999999")
    assert chunk.exit_code == 2 and "--chunk-size" in chunk.output
