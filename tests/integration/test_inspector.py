"""The request inspector over HTTP on SQLite and PostgreSQL: bins, captures, scripts, limits, signatures."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select, update
from standardwebhooks import Webhook

from qhook.api.app import create_app
from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.domain.signing import new_secret, signing_headers
from qhook.services import inspector
from qhook.store import tables
from tests.conftest import auth


async def _bin(api: httpx.AsyncClient, **body: object) -> dict[str, str]:
    response = await api.post("/api/v1/inspector/bins", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _path(url: str) -> str:
    return httpx.URL(url).path


async def _captures(api: httpx.AsyncClient, bin_id: str) -> list[dict[str, object]]:
    response = await api.get(f"/api/v1/inspector/bins/{bin_id}/requests")
    assert response.status_code == 200, response.text
    return list(response.json())


def _signed_headers(
    secret: str, body: bytes, msg_id: str = "msg_test1", at: datetime | None = None
) -> dict[str, str]:
    """Signed with the standardwebhooks library itself, so our check is judged by the reference."""
    moment = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, moment, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


async def test_create_bin_and_capture_any_method_path_query_headers_body(api: httpx.AsyncClient) -> None:
    created = await _bin(api)
    bin_id = created["id"]
    assert len(bin_id) >= 22
    assert created["url"] == f"http://testserver/inspect/{bin_id}"
    expires = datetime.fromisoformat(created["expires_at"])
    assert timedelta(days=6, hours=23) < expires - utcnow() <= timedelta(days=7)

    base = _path(created["url"])
    answer = await api.post(
        base + "/orders/7?x=1&y=two",
        content=b'{"a": 1}',
        headers={"X-Tag": "one", "Content-Type": "application/json"},
    )
    assert answer.status_code == 200
    assert answer.json() == {"ok": True}
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        assert (await api.request(method, base)).status_code == 200
    binary = b"\xff\xfe\x00raw"
    await api.post(base + "/bin", content=binary)

    captures = await _captures(api, bin_id)
    assert [c["method"] for c in captures] == ["POST", "DELETE", "PATCH", "PUT", "GET", "POST"]
    first = captures[-1]
    assert first["path"] == "/orders/7"
    assert first["query"] == "x=1&y=two"
    assert first["body"] == '{"a": 1}' and first["body_encoding"] == "utf-8"
    assert isinstance(first["headers"], dict) and first["headers"]["x-tag"] == "one"
    assert first["source"] == "127.0.0.1"
    assert first["status"] == 200
    assert first["signature"] == "unsigned"
    assert captures[1]["path"] == "/"
    assert captures[0]["body_encoding"] == "base64"
    assert base64.b64decode(str(captures[0]["body"])) == binary
    ids = [c["id"] for c in captures]
    assert ids == sorted(ids, reverse=True)

    info = (await api.get(f"/api/v1/inspector/bins/{bin_id}")).json()
    assert info["captures"] == 6 and info["capture_count"] == 6
    assert info["max_captures"] == 500 and info["has_secret"] is False
    assert info["url"] == created["url"]


def _client(ctx: AppContext, base_url: str = "http://testserver", **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(ctx)), base_url=base_url, headers=headers
    )


async def test_capture_needs_no_key_and_reveals_nothing(api: httpx.AsyncClient, ctx: AppContext) -> None:
    bin_id = (await _bin(api))["id"]
    anonymous = _client(ctx)
    async with anonymous:
        answer = await anonymous.post(f"/inspect/{bin_id}", content=b"secret-ish")
        assert answer.status_code == 200
        assert b"secret-ish" not in answer.content
        listed = await anonymous.get(f"/api/v1/inspector/bins/{bin_id}/requests")
        assert listed.status_code == 401


async def test_scripted_failures_then_success(api: httpx.AsyncClient) -> None:
    created = await _bin(api, responses=[{"status": 500, "times": 3}, {"status": 200}])
    url = _path(created["url"])
    statuses = [(await api.post(url, content=b"{}")).status_code for _ in range(5)]
    assert statuses == [500, 500, 500, 200, 200]
    captures = await _captures(api, created["id"])
    assert [c["status"] for c in captures] == [200, 200, 500, 500, 500]


async def test_rate_limited_answer_with_retry_after(api: httpx.AsyncClient) -> None:
    created = await _bin(
        api, responses={"status": 429, "headers": {"Retry-After": "30"}, "body": "slow down"}
    )
    for _ in range(2):
        answer = await api.post(_path(created["url"]))
        assert answer.status_code == 429
        assert answer.headers["retry-after"] == "30"
        assert answer.text == "slow down"


async def test_delay(api: httpx.AsyncClient) -> None:
    created = await _bin(api, responses=[{"status": 202, "delay_ms": 400, "times": 1}])
    started = time.monotonic()
    answer = await api.get(_path(created["url"]))
    assert answer.status_code == 202
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    assert (await api.get(_path(created["url"]))).status_code == 200  # script used up: default
    assert time.monotonic() - started < 0.4


async def test_patch_responses_restarts_the_script(api: httpx.AsyncClient) -> None:
    created = await _bin(api)
    url = _path(created["url"])
    assert (await api.get(url)).status_code == 200
    patched = await api.patch(
        f"/api/v1/inspector/bins/{created['id']}", json={"responses": [{"status": 503, "times": 1}]}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["responses"] == [{"status": 503, "times": 1}]
    assert patched.json()["capture_count"] == 0
    assert [(await api.get(url)).status_code for _ in range(2)] == [503, 200]
    bad = await api.patch(f"/api/v1/inspector/bins/{created['id']}", json={"responses": [{"status": 700}]})
    assert bad.status_code == 422
    assert bad.json()["details"][0]["field"] == "responses[0].status"


async def test_bad_bin_options_name_the_field(api: httpx.AsyncClient) -> None:
    for body, field in [
        ({"ttl_days": 0}, "ttl_days"),
        ({"max_captures": "many"}, "max_captures"),
        ({"secret": "hunter2"}, "secret"),
        ({"responses": [{"status": 500}, {"status": 200}]}, "responses[0].times"),
    ]:
        response = await api.post("/api/v1/inspector/bins", json=body)
        assert response.status_code == 422, body
        assert response.json()["details"][0]["field"] == field


async def test_max_captures_drops_oldest(api: httpx.AsyncClient) -> None:
    created = await _bin(api, max_captures=3)
    url = _path(created["url"])
    for n in range(5):
        await api.post(url, content=f"n={n}".encode())
    captures = await _captures(api, created["id"])
    assert [c["body"] for c in captures] == ["n=4", "n=3", "n=2"]
    assert (await api.get(f"/api/v1/inspector/bins/{created['id']}")).json()["capture_count"] == 5


async def test_expired_bin_is_404_and_purged(api: httpx.AsyncClient, ctx: AppContext) -> None:
    kept = await _bin(api)
    gone = await _bin(api, ttl_days=1)
    await api.post(_path(gone["url"]), content=b"x")
    with ctx.db.transaction() as tx:
        tx.execute(
            update(tables.inspector_bins)
            .where(tables.inspector_bins.c.id == gone["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    answer = await api.post(_path(gone["url"]), content=b"x")
    assert answer.status_code == 404
    assert "expired" in answer.json()["error"]
    assert (await api.get(f"/api/v1/inspector/bins/{gone['id']}")).status_code == 404
    assert (await api.get(f"/api/v1/inspector/bins/{gone['id']}/requests")).status_code == 404

    assert inspector.purge_expired(ctx, utcnow()) == 1
    with ctx.db.reading() as tx:
        bins = set(tx.execute(select(tables.inspector_bins.c.id)).scalars())
        leftover = tx.execute(
            select(tables.inspector_requests.c.id).where(tables.inspector_requests.c.bin_id == gone["id"])
        ).all()
    assert bins == {kept["id"]}
    assert leftover == []
    assert inspector.purge_expired(ctx, utcnow()) == 0
    # A bin expires once its days are up.
    assert inspector.purge_expired(ctx, utcnow() + timedelta(days=8)) == 1


async def test_unknown_bin_is_404(api: httpx.AsyncClient) -> None:
    assert (await api.post("/inspect/doesnotexist", content=b"x")).status_code == 404
    assert (await api.get("/inspect/..%2Fapi")).status_code == 404
    assert (await api.get("/api/v1/inspector/bins/doesnotexist")).status_code == 404
    assert (await api.delete("/api/v1/inspector/bins/doesnotexist")).status_code == 404


async def test_delete_bin(api: httpx.AsyncClient) -> None:
    created = await _bin(api)
    await api.post(_path(created["url"]), content=b"x")
    assert (await api.delete(f"/api/v1/inspector/bins/{created['id']}")).status_code == 204
    assert (await api.post(_path(created["url"]), content=b"x")).status_code == 404
    assert (await api.get(f"/api/v1/inspector/bins/{created['id']}")).status_code == 404


@pytest.fixture
async def small_limit_client(ctx: AppContext, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    small = AppContext(ctx.settings.model_copy(update={"max_body_bytes": 1000}), ctx.db, ctx.box)
    transport = httpx.ASGITransport(app=create_app(small))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=auth(admin_key)
    ) as http:
        yield http


async def test_bodies_over_the_limit_are_refused(small_limit_client: httpx.AsyncClient) -> None:
    created = await _bin(small_limit_client)
    url = _path(created["url"])
    assert (await small_limit_client.post(url, content=b"x" * 1000)).status_code == 200
    refused = await small_limit_client.post(url, content=b"x" * 1001)
    assert refused.status_code == 413
    assert "QHOOK_MAX_BODY_BYTES" in refused.json()["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the streamed body is counted
        for _ in range(3):
            yield b"y" * 600

    streamed = await small_limit_client.post(url, content=chunks())
    assert streamed.status_code == 413
    captures = await _captures(small_limit_client, created["id"])
    assert [len(str(c["body"])) for c in captures] == [1000]


async def test_signature_valid_invalid_unsigned_and_no_secret(api: httpx.AsyncClient) -> None:
    secret = new_secret()
    created = await _bin(api, secret=secret)
    url = _path(created["url"])
    body = b'{"type": "result.new", "data": {"@id": 1}}'
    await api.post(url, content=body, headers=_signed_headers(secret, body))
    await api.post(url, content=body + b" ", headers=_signed_headers(secret, body))  # body altered
    await api.post(url, content=body, headers=_signed_headers(new_secret(), body))  # other secret
    old = datetime.now(UTC) - timedelta(minutes=10)
    await api.post(url, content=body, headers=_signed_headers(secret, body, at=old))  # replayed late
    await api.post(
        url, content=body, headers={"webhook-id": "x", "webhook-timestamp": "1", "webhook-signature": "junk"}
    )
    await api.post(url, content=body)
    captures = await _captures(api, created["id"])
    assert [c["signature"] for c in captures] == [
        "unsigned",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "valid",
    ]
    assert (await api.get(f"/api/v1/inspector/bins/{created['id']}")).json()["has_secret"] is True

    plain = await _bin(api)
    await api.post(_path(plain["url"]), content=body, headers=_signed_headers(secret, body))
    assert [c["signature"] for c in await _captures(api, plain["id"])] == ["no secret"]


async def test_signature_stays_valid_when_read_later(api: httpx.AsyncClient, ctx: AppContext) -> None:
    """The verdict is taken on arrival; the library's 5-minute tolerance must not spoil old captures."""
    secret = new_secret()
    created = await _bin(api, secret=secret)
    body = b'{"n": 1}'
    await api.post(_path(created["url"]), content=body, headers=_signed_headers(secret, body))
    with ctx.db.transaction() as tx:
        tx.execute(update(tables.inspector_requests).values(at=utcnow() - timedelta(days=2)))
    assert [c["signature"] for c in await _captures(api, created["id"])] == ["valid"]


async def test_signature_checked_against_the_delivery_signal_secret(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    signal_secret, previous = new_secret(), new_secret()
    now = utcnow()
    with ctx.db.transaction() as tx:
        set_id = tx.execute(
            insert(tables.sets)
            .values(name="Batches", kind="analysis_set", created_at=now, updated_at=now)
            .returning(tables.sets.c.id)
        ).scalar_one()
        workflow_id = tx.execute(
            insert(tables.workflows)
            .values(set_id=set_id, name="ERP", triggers=[], created_at=now, updated_at=now)
            .returning(tables.workflows.c.id)
        ).scalar_one()
        signal_id = tx.execute(
            insert(tables.signals)
            .values(
                workflow_id=workflow_id,
                position=0,
                type="webhook",
                config={},
                secret_enc=ctx.box.encrypt(signal_secret),
                previous_secret_enc=ctx.box.encrypt(previous),
                previous_secret_until=now + timedelta(hours=1),
            )
            .returning(tables.signals.c.id)
        ).scalar_one()
        for webhook_id in ("msg_real1", "msg_real2"):
            tx.execute(
                insert(tables.deliveries).values(
                    webhook_id=webhook_id,
                    signal_id=signal_id,
                    action="new",
                    url="http://testserver/inspect/x",
                    endpoint="http://testserver:80",
                    body="{}",
                    status="pending",
                    created_at=now,
                    updated_at=now,
                )
            )
    created = await _bin(api)  # no secret of its own
    url = _path(created["url"])
    body = b'{"type": "result.new"}'
    stamp = int(time.time())
    # Signed the way qhook's own sender signs, during a rotation (new and previous signatures).
    rotating = signing_headers(signal_secret, "msg_real1", stamp, body, previous_secret=previous)
    await api.post(url, content=body, headers=rotating)
    only_previous = signing_headers(previous, "msg_real2", stamp, body)
    await api.post(url, content=body, headers=only_previous)
    forged = signing_headers(new_secret(), "msg_real1", stamp, body)
    await api.post(url, content=body, headers=forged)
    unknown = signing_headers(signal_secret, "msg_unknown", stamp, body)
    await api.post(url, content=body, headers=unknown)
    captures = await _captures(api, created["id"])
    assert [c["signature"] for c in captures] == ["no secret", "invalid", "valid", "valid"]


async def test_url_base_from_public_url(ctx: AppContext, admin_key: str) -> None:
    public = AppContext(
        ctx.settings.model_copy(update={"public_url": "https://qhook.example.com/"}), ctx.db, ctx.box
    )
    transport = httpx.ASGITransport(app=create_app(public))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://internal:8000", headers=auth(admin_key)
    ) as http:
        created = await _bin(http)
        assert created["url"] == f"https://qhook.example.com/inspect/{created['id']}"


async def test_url_base_from_the_request(ctx: AppContext, editor_key: str) -> None:
    other = _client(ctx, "http://qhook.lan:8123", **auth(editor_key))
    async with other:
        created = await _bin(other)
    assert created["url"] == f"http://qhook.lan:8123/inspect/{created['id']}"


async def test_viewer_reads_but_cannot_create_or_change(
    client: httpx.AsyncClient, viewer_key: str, editor_key: str
) -> None:
    refused = await client.post("/api/v1/inspector/bins", json={}, headers=auth(viewer_key))
    assert refused.status_code == 403
    assert "editor role" in refused.json()["error"]
    created = await client.post("/api/v1/inspector/bins", headers=auth(editor_key))
    assert created.status_code == 201
    bin_id = created.json()["id"]
    assert (await client.get(f"/api/v1/inspector/bins/{bin_id}", headers=auth(viewer_key))).status_code == 200
    listed = await client.get(f"/api/v1/inspector/bins/{bin_id}/requests", headers=auth(viewer_key))
    assert listed.status_code == 200
    patch = await client.patch(
        f"/api/v1/inspector/bins/{bin_id}", json={"responses": None}, headers=auth(viewer_key)
    )
    assert patch.status_code == 403
    assert (
        await client.delete(f"/api/v1/inspector/bins/{bin_id}", headers=auth(viewer_key))
    ).status_code == 403


async def test_credentials_in_captures_are_masked(api: httpx.AsyncClient) -> None:
    created = await _bin(api)
    await api.post(
        _path(created["url"]), content=b"{}", headers={"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}
    )
    headers = (await _captures(api, created["id"]))[0]["headers"]
    assert isinstance(headers, dict)
    assert headers["authorization"].startswith("Basic [redacted")
    assert "dXNlcjpwYXNzd29yZA" not in str(headers)


@pytest.fixture
async def served(ctx: AppContext) -> AsyncIterator[str]:
    """The app on a real loopback socket, for requests that cross the wire as a sender's would."""
    import asyncio

    import uvicorn

    small = AppContext(ctx.settings.model_copy(update={"max_body_bytes": 4096}), ctx.db, ctx.box)
    config = uvicorn.Config(create_app(small), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def test_over_a_real_socket(served: str, admin_key: str) -> None:
    import aiohttp

    secret = new_secret()
    async with httpx.AsyncClient(base_url=served, headers=auth(admin_key)) as http:
        created = await _bin(http, secret=secret, responses=[{"status": 500, "times": 1}])
        assert created["url"] == f"{served}/inspect/{created['id']}"
        body = b'{"type": "result.modified"}'
        headers = signing_headers(secret, "msg_wire", int(time.time()), body)
        async with aiohttp.ClientSession() as session:
            async with session.post(created["url"] + "/hook", data=body, headers=headers) as first:
                assert first.status == 500
            async with session.post(created["url"] + "/hook", data=body, headers=headers) as second:
                assert second.status == 200
                assert await second.json() == {"ok": True}
            async with session.head(created["url"]) as head:
                assert head.status == 200

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(5):
                    yield b"z" * 1000

            async with session.post(created["url"], data=chunks()) as big:
                assert big.status == 413
        captures = await _captures(http, created["id"])
    assert [(c["method"], c["path"], c["status"]) for c in captures] == [
        ("HEAD", "/", 200),
        ("POST", "/hook", 200),
        ("POST", "/hook", 500),
    ]
    assert captures[1]["signature"] == "valid"
    assert captures[1]["source"] == "127.0.0.1"


async def test_an_answer_cannot_reach_the_ui_on_the_same_origin(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """Bins answer on qhook's own origin: an answer is a sandboxed document, with only the headers
    a rehearsal needs (no cookie, no origin-wide policy such as NEL or HSTS, no way off qhook)."""
    refused_headers = {
        "Set-Cookie": "qhook_session=x; Path=/ui",
        "set-cookie": "a=b",
        "Clear-Site-Data": '"cookies"',
        "Content-Security-Policy": "default-src *",
        "X-Content-Type-Options": "sniff",
        "NEL": '{"report_to":"x","max_age":31536000,"success_fraction":1.0}',
        "Report-To": '{"group":"x"}',
        "Strict-Transport-Security": "max-age=31536000; includeSubDomains; preload",
        "Service-Worker-Allowed": "/",
        "Refresh": "0;url=https://evil.example.com/",
        "Location": "https://evil.example.com/",
        "Content-Length": "5",
    }
    for header, value in refused_headers.items():
        refused = await api.post("/api/v1/inspector/bins", json={"responses": {"headers": {header: value}}})
        assert refused.status_code == 422, header
        assert refused.json()["details"][0]["field"] == f"responses[0].headers.{header}"
        assert "Retry-After" in refused.json()["details"][0]["error"]
    redirect = await _bin(api, responses={"status": 302, "headers": {"Location": "/moved"}})
    assert (await api.get(_path(redirect["url"]))).headers["location"] == "/moved"
    made = await _bin(
        api,
        responses={"headers": {"Content-Type": "text/html", "X-Tag": "kept"}, "body": "<script>1</script>"},
    )
    answer = await api.get(_path(made["url"]))
    assert answer.status_code == 200 and answer.headers["content-type"] == "text/html"
    assert answer.headers["content-security-policy"] == "sandbox; default-src 'none'; frame-ancestors 'none'"
    assert answer.headers["x-content-type-options"] == "nosniff" and answer.headers["x-tag"] == "kept"

    # A bin scripted before these headers were refused: they are not served.
    with ctx.db.transaction() as tx:
        tx.execute(
            update(tables.inspector_bins)
            .where(tables.inspector_bins.c.id == made["id"])
            .values(
                responses=[{"status": 200, "headers": {"Set-Cookie": "qhook_session=x", "X-Tag": "kept"}}]
            )
        )
    answer = await api.get(_path(made["url"]))
    assert "set-cookie" not in answer.headers and answer.headers["x-tag"] == "kept"
    assert answer.headers.get_list("content-security-policy") == [
        "sandbox; default-src 'none'; frame-ancestors 'none'"
    ]


async def test_a_bin_is_changed_or_deleted_by_its_maker_or_an_admin(
    api: httpx.AsyncClient, ctx: AppContext, make_key: Any
) -> None:
    """Any editor could rewrite another team's bin script (every answer a 500) or delete it."""
    erin, eddie = auth(make_key("editor", "erin")), auth(make_key("editor", "eddie"))
    made = await api.post("/api/v1/inspector/bins", json={}, headers=erin)
    assert made.status_code == 201
    path = f"/api/v1/inspector/bins/{made.json()['id']}"
    script = {"responses": {"status": 500}}
    refused = await api.patch(path, json=script, headers=eddie)
    assert refused.status_code == 403 and "erin's" in refused.json()["error"]
    assert (await api.delete(path, headers=eddie)).status_code == 403
    assert (await api.patch(path, json=script, headers=erin)).status_code == 200
    assert (await api.patch(path, json={"responses": {"status": 200}})).status_code == 200  # an admin
    with ctx.db.transaction() as tx:  # a bin from before owners were kept: any editor, as before
        tx.execute(
            update(tables.inspector_bins)
            .where(tables.inspector_bins.c.id == made.json()["id"])
            .values(created_by=None)
        )
    assert (await api.patch(path, json=script, headers=eddie)).status_code == 200
    assert (await api.delete(path, headers=erin)).status_code == 204


async def test_each_user_lists_their_own_live_bins(
    api: httpx.AsyncClient, client: httpx.AsyncClient, ctx: AppContext, make_key: Any
) -> None:
    """A bin id not written down could not be found again."""
    older = await _bin(api, max_captures=2)
    newer = await _bin(api)
    for n in range(3):
        await api.post(_path(older["url"]), content=f"n={n}".encode())
    gone = await _bin(api)
    with ctx.db.transaction() as tx:
        tx.execute(
            update(tables.inspector_bins)
            .where(tables.inspector_bins.c.id == gone["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    someone = auth(make_key("editor", "sam"))
    theirs = (await client.post("/api/v1/inspector/bins", json={}, headers=someone)).json()

    mine = (await api.get("/api/v1/inspector/bins")).json()
    assert [b["id"] for b in mine] == [newer["id"], older["id"]]  # newest first; expired and others' left out
    assert mine[1]["captures"] == 2 and mine[1]["capture_count"] == 3 and mine[1]["url"] == older["url"]
    listed = (await client.get("/api/v1/inspector/bins", headers=someone)).json()
    assert [b["id"] for b in listed] == [theirs["id"]]


async def test_a_user_limited_to_some_sets_reads_only_bins_they_made(
    api: httpx.AsyncClient, client: httpx.AsyncClient, ctx: AppContext, make_key: Any
) -> None:
    """Any set's workflow may post into a bin: a plant-B admin read plant A's batches through the
    id of plant A's bin, while plant A's sets answered 403."""
    from tests.support.hub_data import ensure_sets

    ensure_sets(ctx.db, 1, 2)
    plant_a = await _bin(api)
    await api.post(_path(plant_a["url"]), content=b'{"batchnumber_": "A-1"}')
    bea = auth(make_key("admin", "bea", [2]))
    for path in (
        f"/api/v1/inspector/bins/{plant_a['id']}",
        f"/api/v1/inspector/bins/{plant_a['id']}/requests",
    ):
        answer = await client.get(path, headers=bea)
        assert answer.status_code == 404, (path, answer.text)
        assert "A-1" not in answer.text
    hers = (await client.post("/api/v1/inspector/bins", json={}, headers=bea)).json()
    await client.post(_path(hers["url"]), content=b'{"batchnumber_": "B-1"}')
    shown = await client.get(f"/api/v1/inspector/bins/{hers['id']}/requests", headers=bea)
    assert shown.status_code == 200 and [c["body"] for c in shown.json()] == ['{"batchnumber_": "B-1"}']
    # Users of every set still read any bin (they read every delivery anyway).
    assert (await api.get(f"/api/v1/inspector/bins/{hers['id']}/requests")).status_code == 200
    viewer = auth(make_key("viewer", "vic"))
    assert (await client.get(f"/api/v1/inspector/bins/{plant_a['id']}", headers=viewer)).status_code == 200
    # Nor may she change or delete another's bin (an admin of some sets is no admin of its bins).
    path = f"/api/v1/inspector/bins/{plant_a['id']}"
    patched = await client.patch(path, json={"responses": [{"status": 410}]}, headers=bea)
    assert patched.status_code == 404 and "A-1" not in patched.text
    assert (await client.delete(path, headers=bea)).status_code == 404
    assert (await api.get(path)).json()["responses"] is None  # unchanged, still there
    assert (
        await api.delete(f"/api/v1/inspector/bins/{hers['id']}")
    ).status_code == 204  # admins of every set may
