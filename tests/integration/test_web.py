"""The server-rendered UI on SQLite and PostgreSQL: login and logout, role gates and CSRF on the
API calls the pages make, 401 to the login page, pages showing the data people came for, and no
secret in any page."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select, update

from qhook.api.app import create_app
from qhook.api.deps import SESSION_COOKIE
from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.domain.rates import Rate
from qhook.errors import RateLimited, Unauthorized, ValidationFailed
from qhook.services import users
from qhook.store import definitions
from qhook.store.tables import signals
from tests.conftest import auth
from tests.support.hub_data import add_attempt, add_delivery, set_endpoint_state
from tests.support.workflows import add_result, make_set, make_workflow, patch_result

ERP = "https://erp.example.com:443"
OTHER = "https://mes.example.com:443"
HINT_401 = (
    "The endpoint rejected the credentials of auth profile 'ERP prod'. Check or regenerate the API token."
)


def make_browser(ctx: AppContext, base_url: str = "http://testserver") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx)), base_url=base_url)


@pytest.fixture
async def browser(ctx: AppContext) -> AsyncIterator[httpx.AsyncClient]:
    """A client that behaves like a browser: cookies, no API key."""
    async with make_browser(ctx) as http:
        yield http


def person(ctx: AppContext, name: str, role: str, set_ids: list[int] | None = None) -> str:
    password = f"password-{name}"
    users.create_user(ctx.db, name, role, password=password, set_ids=set_ids)
    return password


async def login(http: httpx.AsyncClient, name: str, password: str, next_url: str = "/ui/hub") -> str:
    """Log in through the form; returns the page's CSRF token."""
    form = await http.get("/ui/login", params={"next": next_url})
    assert form.status_code == 200
    token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert token, form.text
    done = await http.post(
        "/ui/login",
        data={"name": name, "password": password, "login_token": token.group(1), "next": next_url},
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == next_url
    page = await http.get(next_url)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


def csrf_of(html: str) -> str:
    found = re.search(r'<meta name="qhook-csrf" content="([0-9a-f]+)">', html)
    assert found, html[:500]
    return found.group(1)


async def test_root_and_pages_send_strangers_to_the_login(browser: httpx.AsyncClient) -> None:
    root = await browser.get("/")
    assert root.status_code == 307 and root.headers["location"] == "/ui"
    assert (await browser.get("/ui")).headers["location"] == "/ui/hub"
    for path in ("/ui/hub", "/ui/hub/1", "/ui/endpoints", "/ui/workflows", "/ui/sets/1", "/ui/inspector/x"):
        response = await browser.get(path + "?status=failed")
        assert response.status_code == 303, path
        assert response.headers["location"] == "/ui/login?next=" + quote(path + "?status=failed", safe="")
    # A made-up session cookie is no better, and it is dropped.
    browser.cookies.set("qhook_session", "qhs_forged")
    forged = await browser.get("/ui/hub")
    assert forged.status_code == 303 and "qhook_session=" in forged.headers["set-cookie"]
    # The API still answers JSON, not a redirect.
    api = await browser.get("/api/v1/deliveries")
    assert api.status_code == 401 and "error" in api.json()


async def test_login_cookie_flags_logout_and_bad_attempts(
    ctx: AppContext, browser: httpx.AsyncClient
) -> None:
    password = person(ctx, "vera", "viewer")
    form = await browser.get("/ui/login")
    assert "Log in" in form.text and form.headers["content-security-policy"].startswith("default-src 'self'")
    token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert token
    wrong = await browser.post(
        "/ui/login", data={"name": "vera", "password": "nope-nope", "login_token": token.group(1)}
    )
    assert wrong.status_code == 401 and "Unknown user or wrong password" in wrong.text
    # Without the login form's token (a post from another site): refused, nobody logged in.
    async with make_browser(ctx) as other:
        forged = await other.post("/ui/login", data={"name": "vera", "password": password})
        assert forged.status_code == 400 and "qhook_session" not in forged.headers.get("set-cookie", "")

    form = await browser.get("/ui/login")
    token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert token
    done = await browser.post(
        "/ui/login",
        data={
            "name": "vera",
            "password": password,
            "login_token": token.group(1),
            "next": "https://evil.test/",
        },
    )
    assert done.status_code == 303 and done.headers["location"] == "/ui/hub"  # no open redirect
    cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith("qhook_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    session = browser.cookies["qhook_session"]

    hub = await browser.get("/ui/hub")
    assert hub.status_code == 200 and "vera" in hub.text and "viewer" in hub.text
    # Logout needs the page's token; then the old cookie no longer works anywhere.
    assert (await browser.post("/ui/logout", data={"csrf": csrf_of(hub.text)})).status_code == 303
    async with make_browser(ctx) as replayed:
        replayed.cookies.set("qhook_session", session)
        assert (await replayed.get("/ui/hub")).status_code == 303
        assert (await replayed.get("/api/v1/deliveries")).status_code == 401


async def test_session_cookie_is_secure_over_https(ctx: AppContext) -> None:
    password = person(ctx, "sam", "viewer")
    async with make_browser(ctx, "https://qhook.example.com") as http:
        form = await http.get("/ui/login")
        token = re.search(r'name="login_token" value="([^"]+)"', form.text)
        assert token
        done = await http.post(
            "/ui/login", data={"name": "sam", "password": password, "login_token": token.group(1)}
        )
        cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith("qhook_session="))
        assert "Secure" in cookie and "HttpOnly" in cookie


async def test_hub_lists_filters_and_pages(ctx: AppContext, browser: httpx.AsyncClient) -> None:
    db = ctx.db
    failed = add_delivery(
        db,
        status="failed",
        hint=HINT_401,
        last_status_code=401,
        body=json.dumps({"batchnumber_": "B-1234"}),
    )
    ok = add_delivery(db, status="succeeded", action="modified", workflow_id=2)
    await login(browser, *("vic", person(ctx, "vic", "viewer")))

    page = (await browser.get("/ui/hub")).text
    assert f'href="/ui/hub/{failed}"' in page and f'href="/ui/hub/{ok}"' in page
    assert 'class="badge bad">failed' in page and 'class="badge ok">succeeded' in page
    assert "rejected the credentials of auth profile &#39;ERP prod&#39;" in page

    only_failed = (await browser.get("/ui/hub", params={"status": "failed"})).text
    assert f'href="/ui/hub/{failed}"' in only_failed and f'href="/ui/hub/{ok}"' not in only_failed
    found = (await browser.get("/ui/hub", params={"q": "B-1234"})).text
    assert f'href="/ui/hub/{failed}"' in found and f'href="/ui/hub/{ok}"' not in found
    by_flow = (await browser.get("/ui/hub", params={"workflow_id": "2", "action": "modified"})).text
    assert f'href="/ui/hub/{ok}"' in by_flow and f'href="/ui/hub/{failed}"' not in by_flow
    by_endpoint = (await browser.get("/ui/hub", params={"endpoint": "https://erp.example.com"})).text
    assert f'href="/ui/hub/{ok}"' in by_endpoint
    window = (await browser.get("/ui/hub", params={"since": "2000-01-01T00:00", "until": "2001-01-01"})).text
    assert "No delivery matches these filters" in window

    bad = await browser.get("/ui/hub", params={"since": "yesterday", "status": "lost", "set_id": "x"})
    assert bad.status_code == 200
    assert "since: expected a time" in bad.text and "set: expected an id" in bad.text
    superscript = await browser.get("/ui/hub", params={"result_id": "\u00b2"})  # isdigit, not int()
    assert superscript.status_code == 200 and "result: expected an id" in superscript.text
    bad = await browser.get("/ui/hub", params={"endpoint": "not a url"})
    assert "endpoint" in bad.text and 'class="error"' in bad.text

    more = [add_delivery(db, status="pending") for _ in range(50)]
    first = (await browser.get("/ui/hub")).text
    assert f'href="/ui/hub/{more[-1]}"' in first and f'href="/ui/hub/{failed}"' not in first
    older = re.search(r'href="(/ui/hub\?cursor=[^"]+)">Older', first)
    assert older, "no link to the next page"
    second = (await browser.get(older.group(1).replace("&amp;", "&"))).text
    assert f'href="/ui/hub/{failed}"' in second and f'href="/ui/hub/{more[-1]}"' not in second
    assert "Older" not in second and "Newest" in second


async def test_a_held_row_says_why_it_waits(ctx: AppContext, browser: httpx.AsyncClient) -> None:
    """Held rows showed no reason (or an old attempt's hint): each had to be opened to learn that
    the endpoint's circuit was open."""
    never_tried = add_delivery(ctx.db, status="held")
    tried = add_delivery(ctx.db, status="held", hint="erp.example.com did not answer within 3 s.")
    await login(browser, "vic", person(ctx, "vic", "viewer"))
    page = (await browser.get("/ui/hub", params={"status": "held"})).text
    why = 'Held: the circuit of <a href="/ui/endpoints">https://erp.example.com:443</a> is open'
    assert page.count(why) == 2, page
    assert "using up no attempt. Last attempt: erp.example.com did not answer within 3 s." in page
    assert f'href="/ui/hub/{never_tried}"' in page and f'href="/ui/hub/{tried}"' in page
    detail = (await browser.get(f"/ui/hub/{never_tried}")).text
    assert "No attempt yet: it is held while the endpoint's circuit is open" in detail
    assert "picks this up at" not in detail  # a time already past, beside "held"


async def test_a_delivery_with_thousands_of_attempts_shows_the_newest(
    ctx: AppContext, browser: httpx.AsyncClient
) -> None:
    """Failed probes of a days-long outage add an attempt a minute: the page rendered them all."""
    delivery = add_delivery(ctx.db, status="held")
    for number in range(1, 131):
        add_attempt(ctx.db, delivery, number=number, status_code=503, trigger="probe")
    await login(browser, "vic", person(ctx, "vic", "viewer"))
    page = (await browser.get(f"/ui/hub/{delivery}")).text
    assert page.count('<section class="attempt">') == 100
    assert "#130" in page and "#31\n" in page and "#30\n" not in page
    assert "30 older attempt(s) not shown here" in page


async def test_hub_empty_state(ctx: AppContext, browser: httpx.AsyncClient) -> None:
    await login(browser, "vic", person(ctx, "vic", "viewer"))
    assert "No deliveries yet" in (await browser.get("/ui/hub")).text
    assert "No endpoints yet" in (await browser.get("/ui/endpoints")).text
    assert "No workflows yet" in (await browser.get("/ui/workflows")).text
    assert "No sets yet" in (await browser.get("/ui/sets")).text


async def test_delivery_detail_shows_attempts_redacted_and_gates_buttons(
    ctx: AppContext, browser: httpx.AsyncClient
) -> None:
    body = json.dumps({"batchnumber_": "B-1234", "note": "<script>alert(1)</script>"})
    delivery = add_delivery(ctx.db, status="failed", hint=HINT_401, last_status_code=401, body=body)
    add_attempt(
        ctx.db,
        delivery,
        number=1,
        status_code=401,
        duration_ms=1234,
        hint=HINT_401,
        response_body='{"error":"bad token"}',
        request_headers={"authorization": "Bearer tok-SECRET-77", "webhook-id": "msg_x"},
    )
    add_attempt(ctx.db, delivery, number=2, status_code=None, error_kind="timeout", trigger="manual")
    await login(browser, "vic", person(ctx, "vic", "viewer"))
    page = (await browser.get(f"/ui/hub/{delivery}")).text
    assert "tok-SECRET-77" not in page and "[redacted]" in page
    assert "&#34;batchnumber_&#34;: &#34;B-1234&#34;" in page  # pretty JSON, escaped
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert "HTTP 401" in page and "1.23 s" in page and "timeout" in page and "manual" in page
    assert HINT_401.replace("'", "&#39;") in page
    assert 'data-action="redeliver"' not in page  # a viewer gets no buttons
    missing = await browser.get("/ui/hub/999999")
    assert missing.status_code == 404 and "No delivery 999999" in missing.text
    assert "text/html" in missing.headers["content-type"]

    async with make_browser(ctx) as editor:
        await login(editor, "eddie", person(ctx, "eddie", "editor"))
        page = (await editor.get(f"/ui/hub/{delivery}")).text
        assert 'data-action="redeliver"' in page and 'data-action="cancel"' not in page
        pending = add_delivery(ctx.db, status="pending")
        page = (await editor.get(f"/ui/hub/{pending}")).text
        assert 'data-action="cancel"' in page and 'data-action="redeliver"' not in page
        assert "Redeliver sends" not in page  # said beside a Cancel button alone
        assert "No attempt yet" in page
        assert "Due now: it goes when a worker has room within the endpoint&#39;s limits." in page
        assert "held back as said above" not in page  # due now: nothing holds it
        set_endpoint_state(ctx.db, ERP, paused=True)
        page = (await editor.get(f"/ui/hub/{pending}")).text
        # A next attempt already past beside "Waiting: an operator paused ..." read as a contradiction.
        assert "Waiting: an operator paused https://erp.example.com:443." in page
        assert "(due from then; held back as said above)" in page
        assert 'Resume it on the Endpoints page to send it. <a href="/ui/endpoints">' in page


async def test_actions_through_the_api_check_role_and_csrf(
    ctx: AppContext, browser: httpx.AsyncClient
) -> None:
    delivery = add_delivery(ctx.db, status="failed")
    set_endpoint_state(ctx.db, ERP)
    viewer_csrf = await login(browser, "vic", person(ctx, "vic", "viewer"))
    header = "X-Qhook-CSRF"
    refused = await browser.post(f"/api/v1/deliveries/{delivery}/redeliver", headers={header: viewer_csrf})
    assert refused.status_code == 403 and "editor" in refused.json()["error"]

    async with make_browser(ctx) as editor, make_browser(ctx) as admin:
        editor_csrf = await login(editor, "eddie", person(ctx, "eddie", "editor"))
        # No token, or the viewer's token: a forged cross-site request, refused before anything moves.
        for headers in ({}, {header: viewer_csrf}):
            forged = await editor.post(f"/api/v1/deliveries/{delivery}/redeliver", headers=headers)
            assert forged.status_code == 403 and header in forged.json()["error"]
        done = await editor.post(f"/api/v1/deliveries/{delivery}/redeliver", headers={header: editor_csrf})
        assert done.status_code == 200 and done.json()["status"] == "pending"
        # Reading needs no token.
        assert (await editor.get(f"/api/v1/deliveries/{delivery}")).json()["status"] == "pending"
        origin = quote(ERP, safe="")
        paused = await editor.post(f"/api/v1/endpoints/{origin}/pause", headers={header: editor_csrf})
        assert paused.status_code == 403

        admin_csrf = await login(admin, "ada", person(ctx, "ada", "admin"))
        page = (await admin.get("/ui/endpoints")).text
        assert 'data-action="pause"' in page and ERP in page
        assert 'data-action="pause"' not in (await editor.get("/ui/endpoints")).text
        paused = await admin.post(f"/api/v1/endpoints/{origin}/pause", headers={header: admin_csrf})
        assert paused.status_code == 200 and paused.json()["paused"] is True
        page = (await admin.get("/ui/endpoints")).text
        assert 'class="badge warn">paused' in page and 'data-action="resume"' in page
        # An API key needs no CSRF token: no browser attaches it by itself.
        _, key = users.create_api_key(ctx.db, "ada")
        async with make_browser(ctx) as script:
            resumed = await script.post(f"/api/v1/endpoints/{origin}/resume", headers=auth(key))
        assert resumed.status_code == 200

        # A receiver's Retry-After wait: the admin may end it (Resume drops it), and keep Pause.
        set_endpoint_state(ctx.db, OTHER, throttled_until=utcnow() + timedelta(hours=1))
        add_delivery(ctx.db, status="pending", url="https://mes.example.com/hook", endpoint=OTHER)
        row = endpoint_row(await admin.get("/ui/endpoints"), OTHER)
        assert row is not None and "throttled" in row[0]
        assert (
            'data-action="resume"' in row[0]
            and ">Send now</button>" in row[0]
            and 'data-action="pause"' in row[0]
        )
        other = quote(OTHER, safe="")
        sent = await admin.post(f"/api/v1/endpoints/{other}/resume", headers={header: admin_csrf})
        assert sent.status_code == 200 and sent.json()["throttled_until"] is None
        row = endpoint_row(await admin.get("/ui/endpoints"), OTHER)
        assert row is not None and 'class="badge ok">ok' in row[0] and "Send now" not in row[0]


def endpoint_row(page: httpx.Response, origin: str) -> re.Match[str] | None:
    """The endpoints page's table row of ``origin``."""
    return re.search(r"<tr>\s*<td><a [^>]*>" + re.escape(origin) + r"</a>.*?</tr>", page.text, re.S)


async def test_endpoint_health_numbers(ctx: AppContext, browser: httpx.AsyncClient) -> None:
    delivery = add_delivery(ctx.db, status="failed")
    add_attempt(ctx.db, delivery, number=1, status_code=200, duration_ms=40)
    add_attempt(ctx.db, delivery, number=2, status_code=500, duration_ms=80)
    add_delivery(ctx.db, status="pending")
    await login(browser, "vic", person(ctx, "vic", "viewer"))
    page = (await browser.get("/ui/endpoints")).text
    assert ERP in page and 'class="badge ok">ok' in page
    assert "50.0 %" in page and "of 2" in page
    row = page[page.index(ERP) :]
    assert re.search(r"<td>1</td>", row), "queue depth of one pending delivery"
    # Most of the hour failed: failing while the newest call fails too, ok once one gets through.
    add_attempt(ctx.db, delivery, number=3, status_code=500, duration_ms=80)
    page = (await browser.get("/ui/endpoints")).text
    assert 'class="badge bad">failing' in page
    add_attempt(ctx.db, delivery, number=4, status_code=None, error_kind="timeout")
    add_attempt(ctx.db, add_delivery(ctx.db, status="succeeded"), number=1, status_code=200)
    page = (await browser.get("/ui/endpoints")).text
    assert 'class="badge ok">ok' in page and "40.0 %" in page


async def _catalog(api: httpx.AsyncClient, ctx: AppContext) -> tuple[int, int, dict[str, object], int]:
    set_id = await make_set(api)
    workflow = await make_workflow(
        api,
        set_id,
        name="Released <b>batches</b>",
        triggers={"entry": True, "modification": {"fields": ["status_"]}},
        filter={"all": [{"field": "status_", "op": "eq", "value": "released"}]},
        signals=[{"type": "webhook", "url": "http://127.0.0.1:9/hook", "headers": {"X-Plant": "Delft"}}],
    )
    # A credential in a static header, as saved before they were refused there: never shown.
    signal_id = workflow["signals"][0]["id"]
    with ctx.db.transaction() as tx:
        config = tx.execute(select(signals.c.config).where(signals.c.id == signal_id)).scalar_one()
        config = {**config, "headers": {"X-Api-Key": "hdr-SECRET-31", "X-Plant": "Delft"}}
        tx.execute(update(signals).where(signals.c.id == signal_id).values(config=config))
        definitions.changed(tx)
    result_id = await add_result(api, set_id, batchnumber_="B-1234", status_="draft")
    await patch_result(api, set_id, result_id, status_="released")
    return set_id, int(workflow["id"]), workflow, result_id


async def test_workflows_sets_and_result_trail(
    ctx: AppContext, api: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    set_id, workflow_id, workflow, result_id = await _catalog(api, ctx)
    secret = workflow["signals"][0]["secret"]
    await login(browser, "eddie", person(ctx, "eddie", "editor"))

    listing = (await browser.get("/ui/workflows")).text
    assert "Released &lt;b&gt;batches&lt;/b&gt;" in listing and "modification of status_" in listing
    page = (await browser.get(f"/ui/workflows/{workflow_id}")).text
    assert "http://127.0.0.1:9/hook" in page and "Delft" in page
    assert "hdr-SECRET-31" not in page and secret not in page and "[redacted]" in page
    document = (await api.get(f"/api/v1/workflows/{workflow_id}")).json()
    assert document["signals"][0]["headers"] == {"X-Api-Key": "[redacted]", "X-Plant": "Delft"}
    assert "&#34;released&#34;" in page  # the filter
    signal_id = workflow["signals"][0]["id"]
    assert f'data-workflow="{workflow_id}" data-signal="{signal_id}"' in page  # the Send test button

    sets = (await browser.get("/ui/sets")).text
    assert f'href="/ui/sets/{set_id}"' in sets and "Batch release" in sets
    set_page = (await browser.get(f"/ui/sets/{set_id}")).text
    assert "B-1234" in set_page and "released" in set_page and "Batch number" in set_page
    assert f'href="/ui/sets/{set_id}/results/{result_id}"' in set_page

    result = (await browser.get(f"/ui/sets/{set_id}/results/{result_id}")).text
    assert "B-1234" in result
    assert result.count('class="event"') == 2
    assert "· version 2 ·" in result and "· version 1 ·" in result  # each event's result_version
    assert 'class="badge ok">fired' in result and 'class="badge muted">not fired' in result
    assert "draft" in result and "released" in result  # the change, before and after
    assert 'href="/ui/hub/' in result  # the delivery the release made

    missing = await browser.get(f"/ui/sets/{set_id}/results/999999")
    assert missing.status_code == 404

    assert 'data-testid="never-met"' not in page
    # A workflow whose filter's list option was renamed no longer fires: its pages say so and why.
    assert "broken" not in listing
    relabel = {"fields": [{"name": "status_", "options": [{"id": 2, "label": "approved"}]}]}
    assert (await api.patch(f"/api/v1/sets/{set_id}", json=relabel)).status_code == 200
    assert 'class="badge bad">broken' in (await browser.get("/ui/workflows")).text
    page = (await browser.get(f"/ui/workflows/{workflow_id}")).text
    assert 'class="badge bad">broken' in page
    assert "This workflow does not fire: its stored filter no longer fits the set" in page
    assert "released" in page.split('data-testid="misfit">', 1)[1].split("</p>", 1)[0]


async def test_set_restrictions_apply_to_pages(
    ctx: AppContext, api: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    set_id, workflow_id, _, result_id = await _catalog(api, ctx)
    other = await make_set(api, name="Other set")
    mine = add_delivery(ctx.db, status="failed", set_id=other)
    theirs = add_delivery(ctx.db, status="failed", set_id=set_id)
    await login(browser, "rita", person(ctx, "rita", "viewer", set_ids=[other]))
    hub = (await browser.get("/ui/hub")).text
    assert f'href="/ui/hub/{mine}"' in hub and f'href="/ui/hub/{theirs}"' not in hub
    assert (await browser.get(f"/ui/hub/{theirs}")).status_code == 404
    assert (await browser.get(f"/ui/workflows/{workflow_id}")).status_code == 403
    assert (await browser.get(f"/ui/sets/{set_id}")).status_code == 403
    assert (await browser.get(f"/ui/sets/{set_id}/results/{result_id}")).status_code == 403
    assert "Batch release" not in (await browser.get("/ui/sets")).text


async def test_inspector_page_shows_captures(
    ctx: AppContext, api: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    made = (await api.post("/api/v1/inspector/bins", json={})).json()
    csrf = await login(browser, "eddie", person(ctx, "eddie", "editor"))
    empty = (await browser.get(f"/ui/inspector/{made['id']}")).text
    assert "Nothing captured yet" in empty and made["url"].split("/inspect/")[1] in empty
    sent = await browser.post(
        f"/inspect/{made['id']}/erp?x=1",
        content=b'{"batchnumber_": "B-77"}',
        headers={"Authorization": "Bearer cap-SECRET-12", "Content-Type": "application/json"},
    )
    assert sent.status_code == 200
    page = (await browser.get(f"/ui/inspector/{made['id']}")).text
    assert "/erp?x=1" in page and "&#34;batchnumber_&#34;: &#34;B-77&#34;" in page
    assert "signature unsigned" in page and "cap-SECRET-12" not in page
    assert 'data-bin="' in page  # the live refresh hooks on this
    assert (await browser.get("/ui/inspector/nope-nope")).status_code == 404
    home = await browser.get("/ui/inspector", params={"bin": made["id"]})
    assert home.status_code == 303 and home.headers["location"] == f"/ui/inspector/{made['id']}"
    listing = (await browser.get("/ui/inspector")).text
    assert 'data-action="new-bin"' in listing
    # The bin is the API key's user's, not eddie's: his list is empty until he makes one.
    assert "You have no live bins." in listing and made["id"] not in listing
    his = (await browser.post("/api/v1/inspector/bins", json={}, headers={"X-Qhook-CSRF": csrf})).json()
    listing = (await browser.get("/ui/inspector")).text
    assert f'<a href="/ui/inspector/{his["id"]}"><code>{his["id"]}</code></a>' in listing


async def test_no_secret_in_any_page(
    ctx: AppContext, api: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    profile = await api.post(
        "/api/v1/auth-profiles",
        json={
            "name": "ERP prod",
            "type": "basic",
            "username": "qhook",
            "password": "pw-PROFILE-5521",
            "allowed_domains": ["127.0.0.1"],
        },
    )
    assert profile.status_code == 201, profile.text
    set_id, workflow_id, workflow, result_id = await _catalog(api, ctx)
    signal_secret = workflow["signals"][0]["secret"]
    made = (await api.post("/api/v1/inspector/bins", json={"secret": signal_secret})).json()
    delivery = add_delivery(ctx.db, status="failed", set_id=set_id, workflow_id=workflow_id)
    add_attempt(ctx.db, delivery, request_headers={"Authorization": "Basic cHctUFJPRklMRS01NTIx"})
    admin_password = person(ctx, "ada", "admin")
    _, api_key = users.create_api_key(ctx.db, "ada")
    await login(browser, "ada", admin_password)
    session = browser.cookies["qhook_session"]
    pages = [
        "/ui/hub",
        f"/ui/hub/{delivery}",
        "/ui/endpoints",
        "/ui/workflows",
        f"/ui/workflows/{workflow_id}",
        "/ui/sets",
        f"/ui/sets/{set_id}",
        f"/ui/sets/{set_id}/results/{result_id}",
        "/ui/inspector",
        f"/ui/inspector/{made['id']}",
    ]
    secrets = (
        "pw-PROFILE-5521",
        "cHctUFJPRklMRS01NTIx",
        signal_secret,
        "hdr-SECRET-31",
        api_key,
        admin_password,
        session,
    )
    for path in pages:
        response = await browser.get(path)
        assert response.status_code == 200, path
        for secret in secrets:
            assert secret not in response.text, (path, secret)
    # A signal's auth profile is shown by name (a hint names it; the page showed a bare id).
    uses = await api.post(
        "/api/v1/workflows",
        json={
            "name": "with profile",
            "set_id": set_id,
            "triggers": {"entry": True},
            "signals": [
                {"type": "webhook", "url": "http://127.0.0.1:9/x", "auth_profile_id": profile.json()["id"]}
            ],
        },
    )
    assert uses.status_code == 201, uses.text
    page = (await browser.get(f"/ui/workflows/{uses.json()['id']}")).text
    assert f'{profile.json()["id"]} <span class="muted">(ERP prod)</span>' in page
    assert "pw-PROFILE-5521" not in page


async def test_password_guessing_is_stopped_per_name(browser: httpx.AsyncClient, ctx: AppContext) -> None:
    password = person(ctx, "gina", "viewer")
    person(ctx, "hank", "viewer")

    async def attempt(name: str, secret: str) -> httpx.Response:
        form = await browser.get("/ui/login")
        token = re.search(r'name="login_token" value="([^"]+)"', form.text)
        assert token
        return await browser.post(
            "/ui/login", data={"name": name, "password": secret, "login_token": token.group(1)}
        )

    for _ in range(users.LOGIN_RATE_PER_NAME.limit):
        assert (await attempt("gina", "wrong-guess")).status_code == 401
    # Past the limit even the right password is refused, and the page says when to come back.
    refused = await attempt("gina", password)
    assert refused.status_code == 429
    assert "Too many login attempts" in refused.text
    assert SESSION_COOKIE not in refused.cookies
    # Another account from the same address is not locked out by it.
    assert (await attempt("hank", "password-hank")).status_code == 303
    # Logging in is no failed try: more good logins than the limit all go through (each counted
    # before it and taken back after); counting them locked out people who log in often.
    for _ in range(users.LOGIN_RATE_PER_NAME.limit + 2):
        browser.cookies.clear()  # signed out again: the login form is shown only then
        assert (await attempt("hank", "password-hank")).status_code == 303
    browser.cookies.clear()
    assert (await attempt("hank", "wrong-guess")).status_code == 401  # a failure still counts


def test_failing_from_one_address_does_not_lock_the_name_out_elsewhere(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failed tries counted per name alone let anyone lock the admin out of the UI: ten wrong
    passwords from anywhere. Now the tight limit is per name and address; a spread-out guesser
    still meets the per-name limit over every address."""
    password = person(ctx, "ada", "admin")
    for _ in range(users.LOGIN_RATE_PER_NAME.limit):
        with pytest.raises(Unauthorized):
            users.check_login(ctx.db, "ada", "wrong-guess", source="203.0.113.9")
    with pytest.raises(RateLimited):
        users.check_login(ctx.db, "ada", password, source="203.0.113.9")  # the guesser is stopped
    assert users.check_login(ctx.db, "ada", password, source="10.0.0.5").name == "ada"  # ada is not

    monkeypatch.setattr(users, "LOGIN_RATE_PER_NAME_EVERYWHERE", Rate(15, 15 * 60))  # 100: slow hashes
    spread = users.LOGIN_RATE_PER_NAME_EVERYWHERE.limit - users.LOGIN_RATE_PER_NAME.limit
    for n in range(spread):
        with pytest.raises(Unauthorized):
            users.check_login(ctx.db, "ada", "wrong-guess", source=f"198.51.100.{n}")
    with pytest.raises(RateLimited):
        users.check_login(ctx.db, "ada", password, source="192.0.2.1")


async def test_a_browser_that_signed_in_before_is_not_held_off_by_spread_guessing(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guessing a name from many addresses trips the per-name limit and held its owner off the UI
    for 15 minutes; a browser they signed in with before still gets in (a new one does not)."""
    password = person(ctx, "ada", "admin")
    monkeypatch.setattr(users, "LOGIN_RATE_PER_NAME_EVERYWHERE", Rate(5, 15 * 60))

    async def sign_in(http: httpx.AsyncClient) -> httpx.Response:
        form = await http.get("/ui/login")
        token = re.search(r'name="login_token" value="([^"]+)"', form.text)
        assert token
        return await http.post(
            "/ui/login", data={"name": "ada", "password": password, "login_token": token.group(1)}
        )

    async with make_browser(ctx) as own, make_browser(ctx) as fresh:
        assert (await sign_in(own)).status_code == 303
        assert "qhook_known" in own.cookies
        own.cookies.delete(SESSION_COOKIE)  # signed out
        for n in range(5):  # the limit (5 here) of failed tries for the name, from 5 addresses
            with pytest.raises(Unauthorized):
                users.check_login(ctx.db, "ada", "wrong-guess", source=f"198.51.100.{n}")
        assert (await sign_in(fresh)).status_code == 429
        assert (await sign_in(own)).status_code == 303
        # A cookie qhook did not make gives no pass.
        own.cookies.delete(SESSION_COOKIE)
        own.cookies.delete("qhook_known")
        own.cookies.set("qhook_known", "forged", path="/ui/login")
        assert (await sign_in(own)).status_code == 429


async def test_session_cookies_are_secure_behind_a_tls_proxy(ctx: AppContext) -> None:
    """Behind a proxy on another host the app hears http, and the session cookie went out without
    Secure; QHOOK_PUBLIC_URL says people reach qhook over https."""
    password = person(ctx, "tess", "viewer")
    proxied = replace(
        ctx, settings=ctx.settings.model_copy(update={"public_url": "https://qhook.example.com"})
    )
    for context, secure in ((ctx, False), (proxied, True)):
        async with make_browser(context) as http:
            form = await http.get("/ui/login")
            assert ("secure" in form.headers["set-cookie"].lower()) is secure
            token = re.search(r'name="login_token" value="([^"]+)"', form.text)
            assert token
            # A browser sends a Secure cookie only over https, which the proxy speaks to it.
            done = await http.post(
                "/ui/login",
                data={"name": "tess", "password": password, "login_token": token.group(1)},
                headers={"Cookie": f"qhook_login={token.group(1)}"},
            )
        assert done.status_code == 303, done.text
        session = next(c for c in done.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE))
        assert ("; secure" in session.lower()) is secure, session


def test_a_password_of_spaces_is_refused(ctx: AppContext) -> None:
    with pytest.raises(ValidationFailed, match="not only spaces"):
        users.create_user(ctx.db, "sam", "viewer", password=" " * 12)
    user = users.create_user(ctx.db, "sue", "viewer", password="password-sue")
    with pytest.raises(ValidationFailed, match="not only spaces"):
        users.update_user(ctx.db, user.id, actor="t", password="\t" * 9)


async def test_a_nul_in_the_login_name_is_an_unknown_user(ctx: AppContext) -> None:
    async with make_browser(ctx) as http:
        form = await http.get("/ui/login")
        token = re.search(r'name="login_token" value="([^"]+)"', form.text)
        assert token, form.text
        done = await http.post(
            "/ui/login", data={"name": "admin\x00", "password": "x" * 12, "login_token": token.group(1)}
        )
    assert done.status_code == 401 and "Unknown user or wrong password." in done.text


async def test_hub_filters_out_of_range_are_shown_as_problems(ctx: AppContext) -> None:
    # set_id=9999999999 was a 500 on PostgreSQL (an INTEGER column); a since in the year 0 in UTC
    # was an OverflowError on both.
    password = person(ctx, "ann", "admin")
    async with make_browser(ctx) as http:
        await login(http, "ann", password)
        big = await http.get("/ui/hub", params={"set_id": "9999999999"})
        assert big.status_code == 200 and "set: expected an id from 1 to 2147483647" in big.text
        early = await http.get("/ui/hub", params={"since": "0001-01-01T00:00:00+05:00"})
        assert early.status_code == 200 and "since: a time between the years 1 and 9999 in UTC" in early.text


async def test_error_pages_keep_the_menu_and_say_not_found_for_a_malformed_id(
    ctx: AppContext, browser: httpx.AsyncClient
) -> None:
    """/ui/nonexistent lost the menu bar of a signed-in user; /ui/hub/abc showed a parser's words
    ("Input should be a valid integer")."""
    await login(browser, "nina", person(ctx, "nina", "viewer"))
    for path in ("/ui/nonexistent", "/ui/hub/abc", "/ui/sets/x/results/1"):
        page = await browser.get(path)
        assert page.status_code == 404, path
        assert f"Not found: {path}" in page.text and "valid integer" not in page.text
        assert "Log out" in page.text and 'href="/ui/endpoints"' in page.text, path


async def test_a_filter_that_can_never_be_met_is_flagged_on_its_page(
    ctx: AppContext, api: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    set_id = await make_set(api)
    workflow = await make_workflow(
        api,
        set_id,
        filter={"all": [{"field": "ph_", "op": "gt", "value": 8}, {"field": "ph_", "op": "lt", "value": 6}]},
    )
    await login(browser, "vera", person(ctx, "vera", "viewer"))
    page = (await browser.get(f"/ui/workflows/{workflow['id']}")).text
    assert "This filter can never be met (ph_: gt 8.0 and lt 6.0 cannot both hold)" in page
