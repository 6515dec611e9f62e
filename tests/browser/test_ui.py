"""The UI in a real browser: Debian's headless Chromium driven by Playwright against a real uvicorn
server on a free port (SQLite). Log in, find a failed delivery and its hint, redeliver it, and
send a test from a workflow and watch it arrive, signature valid, in the live inspector."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright

from qhook.api.app import create_app
from qhook.context import AppContext, open_context
from qhook.services import inspector, results, sets, users, workflows
from qhook.settings import Settings
from qhook.store import hub as hub_store
from qhook.store.workflows import WorkflowRecord
from tests.conftest import TEST_SECRET_KEY
from tests.support.hub_data import add_attempt, add_delivery
from tests.support.pg import free_port

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HINT = "No such path on erp.example.com: check the URL."
PASSWORD = "password-erin-123"


@dataclass
class Server:
    base: str
    ctx: AppContext


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """qhook's app under uvicorn in a thread; no delivery worker, so a queued delivery stays queued."""
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=f"sqlite:///{tmp_path / 'qhook.db'}",
        secret_key=TEST_SECRET_KEY,  # type: ignore[arg-type]
        allow_http=True,
        allowed_target_networks="127.0.0.0/8,::1/128",
    )
    ctx = open_context(settings)  # migrates the SQLite file
    port = free_port()
    config = uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    runner = uvicorn.Server(config)
    thread = threading.Thread(target=runner.run, name="uvicorn-ui-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not runner.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Server(f"http://127.0.0.1:{port}", ctx)
    finally:
        runner.should_exit = True
        thread.join(timeout=10)
        ctx.db.dispose()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def release_workflow(ctx: AppContext, url: str) -> tuple[int, WorkflowRecord]:
    """A set "Batch release" and a workflow sending each new result to ``url``."""
    set_id = sets.create_set(
        ctx.db, name="Batch release", fields=[{"name": "batchnumber_", "type": "text"}], actor="test"
    ).id
    workflow, _ = workflows.create_workflow(
        ctx,
        {
            "name": "Released batches to ERP",
            "set_id": set_id,
            "triggers": {"entry": True},
            "signals": [{"type": "webhook", "url": url}],
        },
        actor="test",
    )
    return set_id, workflow


def log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/ui/hub")
    expect(page).to_have_url(f"{base}/ui/login?next=%2Fui%2Fhub")
    page.get_by_label("User").fill("erin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{base}/ui/hub")


def test_hub_redeliver_and_live_inspector(server: Server, browser: Browser) -> None:
    ctx = server.ctx
    users.create_user(ctx.db, "erin", "editor", password=PASSWORD)
    failed = add_delivery(
        ctx.db,
        status="failed",
        hint=HINT,
        last_status_code=404,
        body=json.dumps({"batchnumber_": "B-1234", "status_": "released"}),
    )
    add_attempt(ctx.db, failed, status_code=404, hint=HINT, response_body="Not Found", duration_ms=87)
    add_delivery(ctx.db, status="succeeded")
    errors: list[str] = []

    context = browser.new_context(viewport={"width": 1366, "height": 800})
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    log_in(page, server.base)

    row = page.locator("table.deliveries tbody tr").filter(has=page.locator(f'a[href="/ui/hub/{failed}"]'))
    expect(row.locator(".badge")).to_have_text("failed")
    expect(page.locator(".hint").first).to_have_text(HINT)
    shot = os.environ.get("QHOOK_UI_SCREENSHOT")
    if shot:
        page.screenshot(path=shot, full_page=True)

    page.get_by_label("Text in body").fill("B-1234")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.deliveries tbody td:first-child a")).to_have_count(1)

    page.click(f'a[href="/ui/hub/{failed}"]')
    expect(page.locator("h1")).to_contain_text(f"Delivery {failed}")
    expect(page.locator("pre.body").first).to_contain_text('"batchnumber_": "B-1234"')
    page.get_by_role("button", name="Redeliver").click()
    expect(page.locator("#delivery-status .badge")).to_have_text("pending")
    expect(page.locator("#flash")).to_contain_text("Redelivery queued")
    with ctx.db.reading() as tx:
        found = hub_store.get_delivery(tx, failed)
    assert found is not None and found[0].status == "pending" and found[0].next_trigger == "manual"
    page.reload()
    expect(page.locator("#delivery-status .badge")).to_have_text("pending")

    # Replay from the Hub keeps the list's filters (a set filter was dropped: the replay covered
    # every set) and asks first, with the count.
    page.goto(f"{server.base}/ui/hub?set_id=2")
    page.get_by_text("Replay deliveries…").click()
    replay = page.locator("#replay-form")
    expect(replay.get_by_test_id("replay-narrowed")).to_have_text(
        "Also limited, as the list above, to set 2."
    )
    replay.get_by_label("Status").select_option("succeeded")
    replay.get_by_role("button", name="Replay").click()
    expect(replay.locator(".outcome")).to_have_text("Nothing to replay: no finished delivery matches.")
    # A result filter that is no number stops the replay (it went as null: no filter at all).
    page.goto(f"{server.base}/ui/hub?result_id=x1")
    page.get_by_text("Replay deliveries…").click()
    replay = page.locator("#replay-form")
    replay.get_by_role("button", name="Replay").click()
    expect(replay.locator(".outcome")).to_have_text("Result: a whole number such as 17, or empty.")
    # Unfiltered: the succeeded delivery goes again once confirmed; then nothing is left to queue.
    page.goto(f"{server.base}/ui/hub")
    page.get_by_text("Replay deliveries…").click()
    replay = page.locator("#replay-form")
    replay.get_by_label("Status").select_option("succeeded")
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    replay.get_by_role("button", name="Replay").click()
    expect(replay.locator(".outcome")).to_have_text("Not replayed.")
    assert asked == ["Send 1 delivery again to their receivers?"]
    page.once("dialog", lambda dialog: dialog.accept())
    replay.get_by_role("button", name="Replay").click()
    expect(replay.locator(".outcome")).to_have_text("Queued 1 delivery.")
    replay.get_by_role("button", name="Replay").click()
    expect(replay.locator(".outcome")).to_have_text("Nothing to replay: no finished delivery matches.")

    # The inspector page shows what a "Send test" delivers, live and signature-checked.
    made = inspector.create_bin(ctx, actor="test")
    bin_url = f"{server.base}/inspect/{made.id}"
    _, workflow = release_workflow(ctx, bin_url + "/erp")
    page.goto(f"{server.base}/ui/inspector/{made.id}")
    expect(page.locator("#no-captures")).to_be_visible()
    expect(page.locator("#captures .capture")).to_have_count(0)

    sender = context.new_page()  # a second tab of the same session
    sender.on("pageerror", lambda error: errors.append(str(error)))
    sender.goto(f"{server.base}/ui/workflows/{workflow.id}")
    # A result id that is no number was sent as null: the sample went out as if none was typed.
    sender.locator(".send-test input[name=result_id]").fill("abc")
    sender.get_by_role("button", name="Send test").click()
    expect(sender.locator(".send-test .outcome .error-text")).to_have_text(
        "Result id: a whole number such as 17, or empty for sample data."
    )
    sender.locator(".send-test input[name=result_id]").fill("")
    sender.get_by_role("button", name="Send test").click()
    expect(sender.locator(".send-test .outcome .badge")).to_have_text("HTTP 200", timeout=10000)
    expect(sender.locator(".send-test .outcome a")).to_have_text("See it in the Integration Hub")

    capture = page.locator("#captures .capture").first
    expect(capture).to_contain_text("/erp", timeout=6000)  # appears without a reload
    expect(capture.locator(".signature")).to_have_text("signature valid")
    expect(capture.locator("pre.body")).to_contain_text('"batchnumber_"')
    expect(page.locator("#no-captures")).to_be_hidden()

    # Someone posting to the bin by hand is shown too, unsigned.
    assert httpx.post(bin_url, json={"hello": "world"}).status_code == 200
    expect(page.locator("#captures .capture")).to_have_count(2, timeout=6000)
    expect(page.locator("#captures .capture").first.locator(".signature")).to_have_text("signature unsigned")
    assert errors == []
    context.close()


def test_a_scripted_bin_answer_runs_no_code_in_a_signed_in_browser(server: Server, browser: Browser) -> None:
    """An editor may script a bin's answer; an admin who opens the bin's URL must not run it: the
    page would share the UI's origin and could mint an admin key with the admin's session."""
    ctx = server.ctx
    users.create_user(ctx.db, "erin", "admin", password=PASSWORD)
    page_html = (
        "<title>bin</title><script>document.title = 'ran';"
        "fetch('/ui/account').then(r => r.text()).then(t => { document.title = 'read ' + t.length; });"
        "</script>"
    )
    made = inspector.create_bin(
        ctx,
        responses={"status": 200, "headers": {"Content-Type": "text/html"}, "body": page_html},
        actor="eve",
    )
    context = browser.new_context()
    page = context.new_page()
    log_in(page, server.base)
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text))
    answer = page.goto(f"{server.base}/inspect/{made.id}")
    assert answer is not None and answer.status == 200
    assert answer.headers["content-security-policy"].startswith("sandbox;")
    page.wait_for_timeout(500)  # time for a script to run, were it allowed to
    assert page.title() == "bin"  # the document is there; its script never ran
    assert any("Content Security Policy" in text or "sandbox" in text for text in blocked), blocked
    context.close()


def test_fixing_a_paused_signal_and_a_failing_endpoint_on_a_phone(server: Server, browser: Browser) -> None:
    """From the UI alone, at a phone's width: a signal paused by a 410 is flagged in the list and
    resumed on its page; an endpoint whose calls fail says so; replay's default is a usable one."""
    from qhook.store import queue as queue_store

    ctx = server.ctx
    users.create_user(ctx.db, "erin", "admin", password=PASSWORD)
    set_id, workflow = release_workflow(ctx, "https://erp.example.com/gone")
    [signal] = workflow.active_signals
    with ctx.db.transaction() as tx:
        queue_store.pause_signal(tx, signal.id, "The receiver answered 410 Gone, so qhook paused the signal.")
    failed = add_delivery(
        ctx.db, status="failed", endpoint="https://mes.example.com:443", url="https://mes.example.com/q"
    )
    add_attempt(ctx.db, failed, status_code=500, hint="The receiver had an error.", duration_ms=20)
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 390, "height": 800})
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    log_in(page, server.base)

    for path in ("/ui/hub", "/ui/endpoints", "/ui/workflows", f"/ui/workflows/{workflow.id}"):
        page.goto(server.base + path)
        # The page fits the phone: the bar wraps, wide tables scroll inside themselves.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
        expect(page.get_by_role("button", name="Log out")).to_be_in_viewport()

    page.goto(f"{server.base}/ui/endpoints")
    row = page.locator("table.list tbody tr").filter(has_text="https://mes.example.com:443")
    expect(row.locator(".badge").first).to_have_text("failing")

    page.goto(f"{server.base}/ui/workflows")
    expect(page.locator("table.list tbody tr").first.locator(".badge", has_text="paused")).to_be_visible()
    page.goto(f"{server.base}/ui/workflows/{workflow.id}")
    page.get_by_role("button", name=f"Resume signal #{signal.id}").click()
    expect(page.get_by_role("button", name=f"Resume signal #{signal.id}")).to_have_count(0)
    expect(page.locator("section.signal .badge", has_text="paused")).to_have_count(0)
    assert workflows.get_workflow(ctx.db, workflow.id).active_signals[0].paused_reason is None

    # A workflow started by hand for one result, from the result's page (only the API could).
    manual, _ = workflows.create_workflow(
        ctx,
        {
            "name": "Release by hand",
            "set_id": set_id,
            "triggers": {"manual": True},
            "filter": {"field": "batchnumber_", "op": "eq", "value": "B-1"},
            "signals": [{"type": "webhook", "url": "https://erp.example.com/release"}],
        },
        actor="t",
    )
    _, first = results.create_result(ctx, set_id=set_id, values={"batchnumber_": "B-1"}, actor="t")
    _, other = results.create_result(ctx, set_id=set_id, values={"batchnumber_": "B-2"}, actor="t")
    page.goto(f"{server.base}/ui/sets/{set_id}/results/{first.id}")
    page.get_by_role("button", name="Run “Release by hand”").click()
    expect(page.locator(".run-workflow .outcome .badge")).to_have_text("fired")
    page.goto(f"{server.base}/ui/sets/{set_id}/results/{other.id}")
    page.get_by_role("button", name="Run “Release by hand”").click()
    expect(page.locator(".run-workflow .outcome")).to_contain_text("not fired")
    expect(page.locator(".run-workflow .outcome")).to_contain_text("batchnumber_")
    sent = hub_store_deliveries(ctx, manual.id)
    assert sent == [("manual", first.id)]

    # Replay as the page comes: failed ones, by default (no filter at all was a 422 in API words).
    page.goto(f"{server.base}/ui/hub")
    page.get_by_text("Replay deliveries…").click()
    replay = page.locator("#replay-form")
    expect(replay.get_by_label("Status")).to_have_value("failed")
    page.once("dialog", lambda dialog: dialog.accept())
    replay.get_by_role("button", name="Replay").click()
    expect(replay.locator(".outcome")).to_have_text("Queued 1 delivery.")
    # Both, when chosen: the delivered ones go again too (the failed one is queued already).
    for _ in range(2):
        add_delivery(ctx.db, status="succeeded", endpoint="https://mes.example.com:443")
    replay.get_by_label("Status").select_option("failed,succeeded")
    page.once("dialog", lambda dialog: dialog.accept())
    replay.get_by_role("button", name="Replay").click()
    expect(replay.locator(".outcome")).to_have_text("Queued 2 deliveries.")
    assert errors == []
    context.close()


def hub_store_deliveries(ctx: AppContext, workflow_id: int) -> list[tuple[str, int | None]]:
    from sqlalchemy import select

    from qhook.store.tables import deliveries

    with ctx.db.reading() as tx:
        rows = tx.execute(
            select(deliveries.c.action, deliveries.c.result_id).where(deliveries.c.workflow_id == workflow_id)
        )
        return [(r.action, r.result_id) for r in rows]


def test_probe_now_waits_for_the_circuit_and_shows_it_closed(server: Server, browser: Browser) -> None:
    """The page reloaded at once after Probe now and still said circuit_open (the worker sends the
    probe a moment later), so whoever fixed the receiver could not tell whether it got through."""
    from qhook.clock import utcnow
    from qhook.store import endpoints as endpoint_store
    from qhook.store import queue as queue_store

    ctx = server.ctx
    users.create_user(ctx.db, "erin", "admin", password=PASSWORD)
    add_delivery(ctx.db, status="pending")  # lists the endpoint
    origin = "https://erp.example.com:443"
    with ctx.db.transaction() as tx:
        endpoint_store.open_circuit(tx, origin, utcnow(), "10 of 10 attempts failed")
        queue_store.hold_endpoint(tx, origin, utcnow())
    context = browser.new_context()
    page = context.new_page()
    log_in(page, server.base)
    page.goto(f"{server.base}/ui/endpoints")
    row = page.locator("tr").filter(has_text=origin)
    expect(row.locator(".badge").first).to_have_text("circuit_open")

    def worker_probe_succeeds() -> None:  # what a worker does with the probe, 2 s later
        time.sleep(2)
        with ctx.db.transaction() as tx:
            endpoint_store.close_circuit(tx, origin, utcnow(), "probe succeeded")
            queue_store.unhold_endpoint(tx, origin, utcnow())

    closing = threading.Thread(target=worker_probe_succeeds)
    closing.start()
    page.get_by_role("button", name=f"Probe {origin} now").click()
    expect(page.locator("#flash")).to_contain_text("Probe requested")
    expect(row.locator(".badge").first).to_have_text("ok", timeout=10_000)  # reloaded by itself
    closing.join()
    context.close()


def test_the_api_docs_page_works_without_the_internet(server: Server, browser: Browser) -> None:
    """FastAPI's docs page loaded Swagger UI from a CDN: blank on a plant network without internet,
    and running whatever the CDN served on qhook's own origin."""
    context = browser.new_context()
    page = context.new_page()
    requested: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    response = page.goto(f"{server.base}/api/v1/docs")
    assert response is not None and response.ok
    assert "script-src 'self' 'sha256-" in response.headers["content-security-policy"]
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("qhook")
    expect(page.get_by_text("/api/v1/deliveries/{delivery_id}/redeliver").first).to_be_visible()
    assert requested and all(url.startswith(server.base) for url in requested), requested
    assert errors == []  # nothing refused by the page's policy
    assert httpx.get(f"{server.base}/api/v1/docs/assets/index.html").status_code == 404
    context.close()
