"""No secret of an auth profile or signal in any Integration Hub answer, end to end on SQLite and
PostgreSQL: a real worker sends to a real receiver on 127.0.0.1 with a header profile (a header
name qhook does not know as secret), a basic profile and signing secrets; then every Hub route of
the API, the UI and the CLI is read."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote

import httpx
from aiohttp import web
from typer.testing import CliRunner

from qhook.cli import app
from qhook.context import AppContext
from qhook.domain.urls import origin_of
from tests.conftest import TEST_SECRET_KEY
from tests.integration.test_web import login, make_browser, person
from tests.support.delivery import attempts_of, receiver, running_worker, until
from tests.support.workflows import add_result, make_set

HEADER_VALUE = "hv-NOSECRET-61d0f"
PASSWORD = "pw-NOSECRET-c93a2"
SIGNING_A = "whsec_" + "Tm9TZWNyZXRTaWduaW5nS2V5QUFBQUFB"
SIGNING_B = "whsec_" + "Tm9TZWNyZXRTaWduaW5nS2V5QkJCQkJC"
URL_KEY = "uk-NOSECRET-7f3e1"  # an Azure Functions style ?code= key in the signal's URL
SECRETS = (
    URL_KEY,
    HEADER_VALUE,
    PASSWORD,
    base64.b64encode(f"qhook:{PASSWORD}".encode()).decode(),  # the Basic header as sent
    SIGNING_A,
    SIGNING_B,
    SIGNING_A.removeprefix("whsec_"),
    SIGNING_B.removeprefix("whsec_"),
)


QUERIES: list[str] = []


async def answer(request: web.Request) -> web.StreamResponse:
    QUERIES.append(request.query_string)
    # The LIMS path rejects the credentials (so the hint names the profile); ERP accepts.
    if request.path == "/lims":
        return web.Response(status=401, text="bad key")
    return web.Response(text="ok")


async def test_no_secret_in_any_hub_answer_after_real_sends(
    api: httpx.AsyncClient, ctx: AppContext, db_url: str, tmp_path: Path
) -> None:
    async with receiver(answer) as rx:
        base = rx.url.removesuffix("/hook")
        header = await api.post(
            "/api/v1/auth-profiles",
            json={
                "name": "LIMS key",
                "type": "header",
                "header_name": "X-Lims-Key",
                "header_value": HEADER_VALUE,
                "allowed_domains": ["127.0.0.1"],
            },
        )
        basic = await api.post(
            "/api/v1/auth-profiles",
            json={
                "name": "ERP prod",
                "type": "basic",
                "username": "qhook",
                "password": PASSWORD,
                "allowed_domains": ["127.0.0.1"],
            },
        )
        assert header.status_code == basic.status_code == 201, (header.text, basic.text)
        set_id = await make_set(api)
        created = await api.post(
            "/api/v1/workflows",
            json={
                "name": "To LIMS and ERP",
                "set_id": set_id,
                "triggers": {"entry": True},
                "signals": [
                    {
                        "type": "webhook",
                        "url": f"{base}/lims",
                        "auth_profile_id": header.json()["id"],
                        "secret": SIGNING_A,
                        "max_attempts": 1,
                    },
                    {
                        "type": "webhook",
                        "url": f"{base}/erp?code={URL_KEY}&plant=Venlo",
                        "auth_profile_id": basic.json()["id"],
                        "secret": SIGNING_B,
                    },
                ],
            },
        )
        assert created.status_code == 201, created.text
        result_id = await add_result(api, set_id, batchnumber_="B-1234", status_="released")
        items = (await api.get("/api/v1/deliveries", params={"result_id": result_id})).json()["items"]
        assert len(items) == 2
        async with running_worker(ctx):
            await until(lambda: all(attempts_of(ctx, i["id"]) for i in items))
            await until(lambda: len(rx.received) >= 2)

    # The receiver did get the credentials: the test can fail.
    sent = {r.path: r.headers for r in rx.received}
    assert sent["/lims"]["X-Lims-Key"] == HEADER_VALUE
    assert sent["/erp"]["Authorization"] == "Basic " + SECRETS[3]
    assert f"code={URL_KEY}&plant=Venlo" in QUERIES

    by_url = {i["url"].split("?")[0].rsplit("/", 1)[-1]: i["id"] for i in items}
    assert {i["url"] for i in items} >= {f"{base}/erp?code=[redacted]&plant=Venlo"}
    lims, erp = by_url["lims"], by_url["erp"]
    origin = quote(origin_of(base), safe="")
    answers = [
        await api.get("/api/v1/deliveries"),
        await api.get("/api/v1/deliveries", params={"q": "B-1234"}),
        await api.get("/api/v1/deliveries", params={"endpoint": base, "status": "failed"}),
        await api.get(f"/api/v1/deliveries/{lims}"),
        await api.get(f"/api/v1/deliveries/{erp}"),
        await api.get("/api/v1/endpoints"),
        await api.post(f"/api/v1/endpoints/{origin}/pause"),
        await api.put(f"/api/v1/endpoints/{origin}/limits", json={"rate_limit": "10/second"}),
        await api.post(f"/api/v1/endpoints/{origin}/resume"),
        await api.get(f"/api/v1/endpoints/{origin}/log"),
        await api.get("/api/v1/stats"),
        await api.post(f"/api/v1/deliveries/{lims}/redeliver"),
        await api.post(f"/api/v1/deliveries/{lims}/cancel"),
        await api.post("/api/v1/deliveries/replay", json={"status": "succeeded"}),
        await api.get("/api/v1/audit"),
        await api.get(f"/api/v1/workflows/{created.json()['id']}"),
        await api.get("/api/v1/workflows"),
    ]
    texts = []
    for response in answers:
        assert response.status_code == 200, (response.request.url, response.text)
        texts.append(response.text)
    detail = answers[3].json()
    attempt = detail["attempts"][0]
    assert attempt["status_code"] == 401 and "auth profile 'LIMS key'" in attempt["hint"]
    assert attempt["request_headers"]["X-Lims-Key"] == "[redacted]"
    assert detail["request"]["headers"]["X-Lims-Key"] == "[redacted]"
    assert answers[4].json()["attempts"][0]["request_headers"]["Authorization"] == "[redacted]"
    assert answers[4].json()["attempts"][0]["request_headers"]["webhook-signature"].startswith("v1,")

    password = person(ctx, "hugo", "viewer")
    async with make_browser(ctx) as browser:
        await login(browser, "hugo", password)
        for path in (
            f"/ui/workflows/{created.json()['id']}",
            "/ui/hub",
            "/ui/hub?q=B-1234",
            f"/ui/hub/{lims}",
            f"/ui/hub/{erp}",
            "/ui/endpoints",
        ):
            page = await browser.get(path)
            assert page.status_code == 200, (path, page.text)
            texts.append(page.text)
    assert "LIMS key" in texts[-3]  # the hint, on the delivery's page

    runner = CliRunner()
    env = {
        "QHOOK_DATABASE_URL": db_url,
        "QHOOK_DATA_DIR": str(tmp_path / "var"),
        "QHOOK_SECRET_KEY": TEST_SECRET_KEY,
        "COLUMNS": "200",
    }
    for args in (["deliveries", "list"], ["deliveries", "show", str(lims)], ["deliveries", "show", str(erp)]):
        done = runner.invoke(app, args, env=env, catch_exceptions=False)
        assert done.exit_code == 0, done.output
        texts.append(done.output)
    assert "X-Lims-Key: [redacted]" in texts[-2]

    for text in texts:
        for secret in SECRETS:
            assert secret not in text, secret


async def test_a_url_sent_back_as_shown_keeps_its_key(api: httpx.AsyncClient, ctx: AppContext) -> None:
    """GET shows a credential query value "[redacted]"; PATCHing the document back keeps the key
    (and a changed value replaces it)."""
    from sqlalchemy import select

    from qhook.store.tables import signals

    set_id = await make_set(api)
    url = f"http://127.0.0.1:9/api/hook?code={URL_KEY}&plant=Venlo"
    created = await api.post(
        "/api/v1/workflows",
        json={"name": "ERP", "set_id": set_id, "signals": [{"type": "webhook", "url": url}]},
    )
    assert created.status_code == 201, created.text
    workflow = (await api.get(f"/api/v1/workflows/{created.json()['id']}")).json()
    shown = workflow["signals"][0]
    assert shown["url"] == "http://127.0.0.1:9/api/hook?code=[redacted]&plant=Venlo"
    keep = {k: v for k, v in shown.items() if k not in ("secret_set", "paused_reason")}
    patched = await api.patch(f"/api/v1/workflows/{workflow['id']}", json={"signals": [keep]})
    assert patched.status_code == 200, patched.text

    def stored() -> str:
        with ctx.db.reading() as tx:
            return str(
                tx.execute(select(signals.c.config).where(signals.c.id == shown["id"])).scalar_one()["url"]
            )

    assert stored() == url
    path = f"/api/v1/workflows/{workflow['id']}"
    # Another parameter changed beside the redacted key: the key stays (it was stored as "[redacted]").
    moved = {**keep, "url": "http://127.0.0.1:9/api/hook?code=[redacted]&plant=Delft"}
    assert (await api.patch(path, json={"signals": [moved]})).status_code == 200
    assert stored() == f"http://127.0.0.1:9/api/hook?code={URL_KEY}&plant=Delft"
    fresh = {**keep, "url": "http://127.0.0.1:9/api/hook?code=new-key&plant=Venlo"}
    assert (await api.patch(path, json={"signals": [fresh]})).status_code == 200
    assert stored() == "http://127.0.0.1:9/api/hook?code=new-key&plant=Venlo"
    elsewhere = {**keep, "url": "http://127.0.0.2:9/api/hook?code=[redacted]"}
    refused = await api.patch(path, json={"signals": [elsewhere]})
    assert refused.status_code == 422 and refused.json()["details"][0]["field"] == "signals[0].url"
    copied = await api.post(
        "/api/v1/workflows",
        json={"name": "Copy", "set_id": set_id, "signals": [{"type": "webhook", "url": shown["url"]}]},
    )
    assert copied.status_code == 422 and "the key itself" in copied.text

    # Two workflows sending the same event to the same URL: the preview's warning names it, redacted.
    entry = {"entry": True}
    restored = {"triggers": entry, "signals": [{**keep, "url": url}]}
    assert (await api.patch(path, json=restored)).status_code == 200
    twin = await api.post(
        "/api/v1/workflows",
        json={
            "name": "Twin",
            "set_id": set_id,
            "triggers": entry,
            "signals": [{"type": "webhook", "url": url}],
        },
    )
    result_id = await add_result(api, set_id, batchnumber_="B-1")
    preview = await api.post(f"/api/v1/workflows/{twin.json()['id']}/preview", json={"result_id": result_id})
    assert preview.status_code == 200, preview.text
    assert any("code=[redacted]&plant=Venlo" in w for w in preview.json()["warnings"]), preview.json()
    assert URL_KEY not in preview.text
