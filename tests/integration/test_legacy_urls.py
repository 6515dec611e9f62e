"""Legacy ``https://user:pass@host`` webhook URLs: sent as Basic, stored like any auth profile."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from sqlalchemy import select

from qhook.context import AppContext
from qhook.store.tables import audit_log, auth_profiles, deliveries, signals, workflows
from tests.support.delivery import receiver, running_worker, until
from tests.support.workflows import add_result, make_set

PASSWORD = "s3cr@t:pw"  # '@' and ':' inside, percent-encoded in the URL
USER = "erp"


def legacy_url(base: str, password: str = PASSWORD) -> str:
    scheme, rest = base.split("://", 1)
    quoted = password.replace("%", "%25").replace("@", "%40").replace(":", "%3A")
    return f"{scheme}://{USER}:{quoted}@{rest}"


def leaks(text: str) -> bool:
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return any(s in text for s in (PASSWORD, "s3cr%40t", encoded))


async def save(api: httpx.AsyncClient, set_id: int, url: str, **signal: Any) -> httpx.Response:
    return await api.post(
        "/api/v1/workflows",
        json={
            "name": "legacy ERP",
            "set_id": set_id,
            "triggers": {"entry": True},
            "signals": [{"type": "webhook", "url": url, **signal}],
        },
    )


async def test_legacy_url_becomes_a_basic_profile_and_sends_basic(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    async with receiver() as rx:
        set_id = await make_set(api)
        created = await save(api, set_id, legacy_url(rx.url))
        assert created.status_code == 201, created.text
        [signal] = created.json()["signals"]
        assert signal["url"] == rx.url and signal["auth_profile_id"] is not None
        profile = (await api.get(f"/api/v1/auth-profiles/{signal['auth_profile_id']}")).json()
        assert profile["name"] == "legacy basic for 127.0.0.1" and profile["type"] == "basic"
        assert profile["allowed_domains"] == ["127.0.0.1"] and profile["username"] == USER

        result_id = await add_result(api, set_id, batchnumber_="B-1")
        async with running_worker(ctx):
            await until(lambda: rx.received, timeout=10)
        [request] = rx.received
        expected = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        assert request.headers["Authorization"] == f"Basic {expected}"

        workflow_id = created.json()["id"]
        delivery_id = (await api.get("/api/v1/deliveries")).json()["items"][0]["id"]
        for path in (
            f"/api/v1/workflows/{workflow_id}",
            "/api/v1/workflows",
            "/api/v1/auth-profiles",
            f"/api/v1/auth-profiles/{signal['auth_profile_id']}",
            "/api/v1/audit",
            "/api/v1/deliveries",
            f"/api/v1/deliveries/{delivery_id}",
            f"/api/v1/events?result_id={result_id}",
        ):
            response = await api.get(path)
            assert response.status_code == 200, (path, response.text)
            assert not leaks(response.text), path
        assert not leaks(created.text)
    with ctx.db.reading() as tx:
        for table in (signals, workflows, audit_log, auth_profiles, deliveries):
            rows = [repr(tuple(r)) for r in tx.execute(select(table))]
            assert rows and not any(leaks(r) for r in rows), table.name


async def test_same_credentials_reuse_the_profile_and_others_get_their_own(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    set_id = await make_set(api)
    base = "http://127.0.0.1:9/hook"
    first = (await save(api, set_id, legacy_url(base))).json()["signals"][0]["auth_profile_id"]
    again = (await save(api, set_id, legacy_url(base + "/other"))).json()["signals"][0]["auth_profile_id"]
    other = (await save(api, set_id, legacy_url(base, "another-pw"))).json()["signals"][0]["auth_profile_id"]
    assert first == again != other
    names = {p["id"]: p["name"] for p in (await api.get("/api/v1/auth-profiles")).json()}
    assert names[other] == "legacy basic for 127.0.0.1 (2)"

    # The profile serves the set whose workflow gave its credentials. The same pair on another
    # set's workflow gets a profile of its own: reusing (and extending) the first one told an admin
    # of that set, by its id, that a guessed password was right.
    assert (await api.get(f"/api/v1/auth-profiles/{first}")).json()["set_ids"] == [set_id]
    second_set = await make_set(api, name="Complaints")
    own = (await save(api, second_set, legacy_url(base))).json()["signals"][0]["auth_profile_id"]
    assert own not in (first, other)
    assert (await api.get(f"/api/v1/auth-profiles/{first}")).json()["set_ids"] == [set_id]
    assert (await api.get(f"/api/v1/auth-profiles/{own}")).json()["set_ids"] == [second_set]
    assert (await api.get(f"/api/v1/auth-profiles/{other}")).json()["set_ids"] == [set_id]

    # A PATCH keeping the signal (bare URL and its profile) changes nothing about the credentials.
    workflow = (await save(api, set_id, legacy_url(base))).json()
    patched = await api.patch(f"/api/v1/workflows/{workflow['id']}", json={"name": "renamed"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["signals"][0]["auth_profile_id"] == first
    assert patched.json()["signals"][0]["url"] == base


async def test_legacy_url_refusals_name_the_url(api: httpx.AsyncClient) -> None:
    set_id = await make_set(api)
    base = "http://127.0.0.1:9/hook"
    profile = await api.post(
        "/api/v1/auth-profiles",
        json={
            "name": "ERP",
            "type": "header",
            "header_name": "X-Key",
            "header_value": "k",
            "allowed_domains": ["127.0.0.1"],
        },
    )
    assert profile.status_code == 201, profile.text
    both = await save(api, set_id, legacy_url(base), auth_profile_id=profile.json()["id"])
    no_password = await save(api, set_id, "http://erp@127.0.0.1:9/hook")
    for response in (both, no_password):
        assert response.status_code == 422, response.text
        assert response.json()["details"][0]["field"] == "signals[0].url"
        assert not leaks(response.text)
