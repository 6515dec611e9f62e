"""An admin limited to some sets steers their sets' workflows and endpoints, never what spans every
set: users, API keys, auth profiles and the audit trail (SQLite and PostgreSQL). Before, such an
admin lifted their own limit and made a key for the full admin."""

from __future__ import annotations

from typing import Any

import httpx

from qhook.context import AppContext
from qhook.services import users
from tests.conftest import auth
from tests.support.hub_data import ensure_sets
from tests.support.workflows import BATCH_FIELDS, add_result, make_set

PROFILE = {
    "name": "ERP basic",
    "type": "basic",
    "username": "qhook",
    "password": "s3cret-pass",
    "allowed_domains": ["erp.example.com"],
}


async def test_limited_admin_cannot_touch_what_spans_every_set(
    api: httpx.AsyncClient, client: httpx.AsyncClient, ctx: AppContext, make_key: Any
) -> None:
    ensure_sets(ctx.db, 1, 2)
    limited = auth(make_key("admin", "lisa", [1]))
    lisa = users.user_named(ctx.db, "lisa")
    alice = users.user_named(ctx.db, "alice")  # the full admin of the ``api`` client
    profile = await api.post("/api/v1/auth-profiles", json=PROFILE)
    assert profile.status_code == 201, profile.text
    profile_id = profile.json()["id"]
    [alice_key] = [k for k in users.list_api_keys(ctx.db, "alice")]
    keys_before = len(users.list_api_keys(ctx.db))

    attempts = [
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/users", {"name": "mallory", "role": "admin", "password": "password-mallory"}),
        ("GET", f"/api/v1/users/{alice.id}", None),
        ("PATCH", f"/api/v1/users/{lisa.id}", {"set_ids": None}),
        ("GET", "/api/v1/api-keys", None),
        ("POST", "/api/v1/api-keys", {"user": "alice", "label": "stolen"}),
        ("DELETE", f"/api/v1/api-keys/{alice_key.id}", None),
        ("GET", "/api/v1/auth-profiles", None),
        ("POST", "/api/v1/auth-profiles", {**PROFILE, "name": "other"}),
        ("GET", f"/api/v1/auth-profiles/{profile_id}", None),
        ("PATCH", f"/api/v1/auth-profiles/{profile_id}", {"token_url": "https://evil.example.com/token"}),
        ("DELETE", f"/api/v1/auth-profiles/{profile_id}", None),
        ("GET", "/api/v1/audit", None),
    ]
    for method, path, body in attempts:
        answer = await client.request(method, path, json=body, headers=limited)
        assert answer.status_code == 403, (method, path, answer.text)
        assert answer.json()["error"] == (
            "This needs an admin of every set; lisa is an admin limited to some sets"
        ), (method, path)

    # Nothing moved: her limit, the keys, the profile.
    assert users.user_named(ctx.db, "lisa").set_ids == (1,)
    assert len(users.list_api_keys(ctx.db)) == keys_before
    assert users.list_api_keys(ctx.db, "alice")[0].revoked_at is None
    assert (await api.get(f"/api/v1/auth-profiles/{profile_id}")).status_code == 200
    assert users.list_users(ctx.db) and "mallory" not in {u.name for u in users.list_users(ctx.db)}

    # What is hers she still steers; the full admin still reaches everything.
    assert (await client.get("/api/v1/me", headers=limited)).json()["set_ids"] == [1]
    assert (await client.get("/api/v1/sets", headers=limited)).status_code == 200
    for path in ("/api/v1/users", "/api/v1/api-keys", "/api/v1/auth-profiles", "/api/v1/audit"):
        assert (await api.get(path)).status_code == 200, path


async def test_limited_admin_cannot_change_other_sets_or_write_into_them(
    api: httpx.AsyncClient, client: httpx.AsyncClient, ctx: AppContext, make_key: Any
) -> None:
    """A set-1 admin renamed and deleted set 2 with its results, and a transfer signal let them
    overwrite set 2's results (as "system", firing set 2's own workflows)."""
    mine = await make_set(api, name="Mine")
    theirs = await make_set(api, name="Theirs")
    limited = auth(make_key("admin", "lisa", [mine]))
    await add_result(api, theirs, batchnumber_="B-9")

    assert (
        await client.patch(f"/api/v1/sets/{theirs}", json={"name": "x"}, headers=limited)
    ).status_code == 403
    assert (await client.delete(f"/api/v1/sets/{theirs}?force=true", headers=limited)).status_code == 403
    created = await client.post(
        "/api/v1/sets", json={"name": "New", "kind": "analysis_set", "fields": BATCH_FIELDS}, headers=limited
    )
    assert created.status_code == 403  # it would lie outside her own limit
    assert (await api.get(f"/api/v1/sets/{theirs}")).json()["name"] == "Theirs"

    transfer = {"type": "transfer", "set_id": theirs, "values": {"batchnumber_": "TAMPERED"}}
    doc = {"name": "tamper", "set_id": mine, "triggers": {"manual": True}, "signals": [transfer]}
    refused = await client.post("/api/v1/workflows", json=doc, headers=limited)
    assert refused.status_code == 403, refused.text
    expected = f"a set you may write (set {theirs} is outside your sets)"
    assert refused.json()["details"] == [{"field": "signals[0].set_id", "error": expected}]
    malformed = {**doc, "signals": [{**transfer, "set_id": [theirs]}]}
    not_an_id = await client.post("/api/v1/workflows", json=malformed, headers=limited)
    assert not_an_id.status_code == 422, not_an_id.text  # the signal's own check, not a 500
    own = await client.post("/api/v1/workflows", json={**doc, "signals": []}, headers=limited)
    assert own.status_code == 201, own.text
    patched = await client.patch(
        f"/api/v1/workflows/{own.json()['id']}", json={"signals": [transfer]}, headers=limited
    )
    assert patched.status_code == 403
    into_own = {**transfer, "set_id": mine}
    assert (
        await client.patch(
            f"/api/v1/workflows/{own.json()['id']}", json={"signals": [into_own]}, headers=limited
        )
    ).status_code == 200
    assert (
        await client.patch(f"/api/v1/sets/{mine}", json={"name": "Mine, renamed"}, headers=limited)
    ).status_code == 200
