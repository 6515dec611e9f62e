"""``qhook deliveries list|show``, ``qhook replay`` and ``qhook purge`` on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner, Result

from qhook.cli import app
from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.services import audit
from qhook.store import hub as hub_store
from qhook.store.tables import email_outbox
from tests.conftest import TEST_SECRET_KEY
from tests.support.hub_data import add_attempt, add_delivery, days_ago, set_endpoint_state


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def run(db_url: str, tmp_path: Path, ctx: AppContext):  # type: ignore[no-untyped-def]
    runner = CliRunner()

    def _run(*args: str) -> Result:
        env = {
            "QHOOK_DATABASE_URL": db_url,
            "QHOOK_DATA_DIR": str(tmp_path / "var"),
            "QHOOK_SECRET_KEY": TEST_SECRET_KEY,
            "COLUMNS": "200",
        }
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    return _run


def test_deliveries_list_with_filters(run, ctx: AppContext) -> None:  # type: ignore[no-untyped-def]
    wanted = add_delivery(
        ctx.db,
        status="failed",
        body=json.dumps({"batchnumber_": "B-1234"}),
        hint="No such path: check the URL.",
    )
    other = add_delivery(ctx.db, status="succeeded", workflow_id=5)
    listed = run("deliveries", "list")
    assert listed.exit_code == 0, listed.output
    assert f"\n{wanted} " in listed.stdout or f" {wanted} " in listed.stdout
    assert "2 deliveries" in listed.stdout
    found = run("deliveries", "list", "-q", "B-1234", "--status", "failed")
    assert found.exit_code == 0, found.output
    assert "failed" in found.stdout and "No such path" in found.stdout
    assert "1 delivery" in found.stdout
    assert "succeeded" not in found.stdout
    by_workflow = run(
        "deliveries", "list", "--workflow", "5", "--since", days_ago(1).strftime("%Y-%m-%dT%H:%M")
    )
    assert by_workflow.exit_code == 0, by_workflow.output
    assert "1 delivery" in by_workflow.stdout and str(other) in by_workflow.stdout
    bad = run("deliveries", "list", "--status", "lost")
    assert bad.exit_code == 1
    assert "status: one of" in one_line(bad.stderr)


def test_deliveries_show(run, ctx: AppContext) -> None:  # type: ignore[no-untyped-def]
    delivery_id = add_delivery(ctx.db, status="failed", body=json.dumps({"batchnumber_": "B-1234"}))
    add_attempt(
        ctx.db,
        delivery_id,
        status_code=404,
        hint="No such path on erp.example.com: check the URL.",
        request_headers={"authorization": "Bearer tok-secret-value", "webhook-id": "msg_1"},
    )
    shown = run("deliveries", "show", str(delivery_id))
    assert shown.exit_code == 0, shown.output
    text = one_line(shown.stdout)
    assert f"delivery {delivery_id}" in text and "failed" in text
    assert '"batchnumber_": "B-1234"' in text
    assert "No such path on erp.example.com" in text and "404" in text
    assert "tok-secret-value" not in text and "authorization: [redacted]" in text
    missing = run("deliveries", "show", "999999")
    assert missing.exit_code == 1 and "No delivery 999999" in missing.stderr


def test_replay_with_progress_and_count(run, ctx: AppContext) -> None:  # type: ignore[no-untyped-def]
    failed = [add_delivery(ctx.db, status="failed", workflow_id=3) for _ in range(4)]
    add_delivery(ctx.db, status="failed", workflow_id=4)
    done = run("replay", "--status", "failed", "--workflow", "3")
    assert done.exit_code == 0, done.output
    assert "4 deliveries queued" in done.stdout
    assert "replaying" in done.stderr
    with ctx.db.reading() as tx:
        assert {hub_store.get_delivery(tx, i)[0].status for i in failed} == {"pending"}  # type: ignore[index]
    again = run("replay", "--status", "failed", "--workflow", "3")
    assert "0 deliveries queued" in again.stdout
    entries = [e for e in audit.list_entries(ctx.db) if e.action == "delivery.replay"]
    assert entries and all(e.actor == "cli" for e in entries)
    nothing = run("replay")
    assert nothing.exit_code == 1 and "at least one filter" in one_line(nothing.stderr)
    assert "--workflow" in one_line(nothing.stderr)  # the options, not the API's field names


def test_replay_takes_every_hub_filter_and_counts_first(run, ctx: AppContext) -> None:  # type: ignore[no-untyped-def]
    """The CLI had only --status --workflow --endpoint --since --until, and no dry run: replaying a
    workflow re-sent its succeeded deliveries without a count."""
    wanted = add_delivery(
        ctx.db, status="failed", set_id=7, result_id=70, action="modified", body='{"b": "B-77"}'
    )
    add_delivery(ctx.db, status="failed", set_id=7, result_id=71, action="new", body='{"b": "B-78"}')
    add_delivery(ctx.db, status="failed", set_id=8, result_id=70, action="modified", body='{"b": "B-77"}')
    dry = run("replay", "--set", "7", "--action", "modified", "--q", "B-77", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would queue 1 delivery" in dry.stdout
    with ctx.db.reading() as tx:
        assert hub_store.get_delivery(tx, wanted)[0].status == "failed"  # type: ignore[index]
    done = run("replay", "--set", "7", "--result", "70")
    assert "1 delivery queued" in done.stdout
    with ctx.db.reading() as tx:
        assert hub_store.get_delivery(tx, wanted)[0].status == "pending"  # type: ignore[index]


def test_purge_dry_run_then_purge(run, ctx: AppContext) -> None:  # type: ignore[no-untyped-def]
    old = add_delivery(ctx.db, status="succeeded", created_at=days_ago(45))
    add_attempt(ctx.db, old)
    young = add_delivery(ctx.db, status="succeeded", created_at=days_ago(2))
    dry = run("purge", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would delete 1 delivery (1 succeeded, 0 cancelled, 0 failed) and 1 attempt" in one_line(
        dry.stdout
    )
    with ctx.db.reading() as tx:
        assert hub_store.get_delivery(tx, old) is not None
    done = run("purge")
    assert "deleted 1 delivery" in one_line(done.stdout)
    with ctx.db.reading() as tx:
        assert hub_store.get_delivery(tx, old) is None
        assert hub_store.get_delivery(tx, young) is not None


def test_endpoints_list_pause_and_resume(run, ctx: AppContext) -> None:  # type: ignore[no-untyped-def]
    """On-call people had no endpoint command: pausing an ERP took the API or the UI."""
    add_delivery(ctx.db, status="pending")
    set_endpoint_state(
        ctx.db, "https://lims.example.org:443", throttled_until=utcnow() + timedelta(minutes=10)
    )
    listed = run("endpoints", "list")
    assert listed.exit_code == 0, listed.output
    assert "https://erp.example.com:443" in listed.stdout and "throttled" in listed.stdout
    paused = run("endpoints", "pause", "https://erp.example.com")
    assert paused.exit_code == 0 and "https://erp.example.com:443: paused" in paused.stdout
    assert "paused" in next(line for line in run("endpoints", "list").stdout.splitlines() if "erp" in line)
    assert "resumed" in run("endpoints", "resume", "https://erp.example.com").stdout
    waited = run("endpoints", "resume", "https://lims.example.org")  # no pause: ends the Retry-After wait
    assert waited.exit_code == 0 and "still waiting" not in waited.stdout
    assert "throttled" not in run("endpoints", "list").stdout
    bad = run("endpoints", "pause", "not a url")
    assert bad.exit_code == 1 and "origin" in one_line(bad.stderr)
    entries = [e for e in audit.list_entries(ctx.db) if e.action.startswith("endpoint.")]
    assert [e.actor for e in entries] == ["cli"] * 3


def test_emails_list_and_resend(run, ctx: AppContext) -> None:  # type: ignore[no-untyped-def]
    with ctx.db.transaction() as tx:
        email_id = tx.execute(
            insert(email_outbox)
            .values(
                recipients=["qa@example.com"],
                subject="Batch B-1 released",
                body="b",
                status="failed",
                attempt_count=9,
                last_error="SMTP 535: 5.7.8 Authentication credentials invalid",
                created_at=utcnow(),
            )
            .returning(email_outbox.c.id)
        ).scalar_one()
    listed = run("emails", "list", "--status", "failed")
    assert listed.exit_code == 0, listed.output
    text = one_line(listed.stdout)
    assert "qa@example.com" in text and "SMTP 535" in text and "1 e-mails" in text
    resent = run("emails", "resend", str(email_id))
    assert resent.exit_code == 0 and f"e-mail {email_id} to qa@example.com: queued again" in resent.stdout
    assert "0 e-mails" in run("emails", "list", "--status", "failed").stdout
    assert run("emails", "resend", str(email_id)).exit_code == 1  # pending: it goes by itself


def test_replay_without_a_status_sends_again_what_failed_only(run, ctx: AppContext) -> None:  # type: ignore[no-untyped-def]
    """`qhook replay --endpoint X` after a fix re-sent everything the ERP already had."""
    failed = add_delivery(ctx.db, status="failed")
    delivered = add_delivery(ctx.db, status="succeeded")
    done = run("replay", "--endpoint", "https://erp.example.com")
    assert done.exit_code == 0 and "1 delivery queued" in done.stdout, done.output
    with ctx.db.reading() as tx:
        assert hub_store.get_delivery(tx, failed)[0].status == "pending"  # type: ignore[index]
        assert hub_store.get_delivery(tx, delivered)[0].status == "succeeded"  # type: ignore[index]
    both = run("replay", "--endpoint", "https://erp.example.com", "--status", "failed,succeeded", "--dry-run")
    assert "would queue 1 delivery" in both.stdout, both.output  # the failed one is queued already
    bad = run("replay", "--status", "failed,pending")
    assert bad.exit_code != 0 and "comma-separated" in bad.output
