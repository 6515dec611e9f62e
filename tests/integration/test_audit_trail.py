"""GET /api/v1/audit over every configuration change, on SQLite and PostgreSQL: workflows, signal
secrets, auth profiles, users and API keys are written down (who, when, what), and no secret
given or generated along the way appears in the log."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx

from qhook.clock import utcnow
from qhook.context import AppContext
from tests.conftest import auth
from tests.support.workflows import make_set

PROFILE_PASSWORD = "pw-AUDIT-41c7e"
PROFILE_PASSWORD_2 = "pw-AUDIT-v2-8b0d"
HEADER_VALUE = "hv-AUDIT-93f1a"
CLIENT_SECRET = "cs-AUDIT-2e6c5"
SIGNING = "whsec_" + "QXVkaXRTaWduaW5nU2VjcmV0MTIzNDU2"
ROTATED = "whsec_" + "Um90YXRlZFNpZ25pbmdTZWNyZXQ5ODc2"
LEGACY_PASSWORD = "legacy-AUDIT-pw-5a"
USER_PASSWORD = "user-AUDIT-pass-1"
USER_PASSWORD_2 = "user-AUDIT-pass-2"


async def ok(response: httpx.Response, status: int = 200) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, (response.request.url, response.text)
    return response.json() if response.content else {}


async def test_every_configuration_change_is_audited_without_secrets(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    started = utcnow() - timedelta(seconds=1)
    set_id = await make_set(api)
    profiles = []
    for doc in (
        {
            "name": "ERP prod",
            "type": "basic",
            "username": "qhook",
            "password": PROFILE_PASSWORD,
            "allowed_domains": ["erp.example.com"],
        },
        {
            "name": "LIMS key",
            "type": "header",
            "header_name": "X-Lims-Key",
            "header_value": HEADER_VALUE,
            "allowed_domains": ["lims.example.com"],
        },
        {
            "name": "ERP OAuth",
            "type": "oauth2_client_credentials",
            "token_url": "https://login.example.com/oauth2/token",
            "client_id": "qhook-client",
            "client_secret": CLIENT_SECRET,
            "allowed_domains": ["erp.example.com"],
        },
    ):
        profiles.append((await ok(await api.post("/api/v1/auth-profiles", json=doc), 201))["id"])
    await ok(await api.patch(f"/api/v1/auth-profiles/{profiles[0]}", json={"password": PROFILE_PASSWORD_2}))

    workflow = await ok(
        await api.post(
            "/api/v1/workflows",
            json={
                "name": "To ERP",
                "set_id": set_id,
                "triggers": {"entry": True},
                "signals": [
                    {"type": "webhook", "url": "https://erp.example.com/hook", "secret": SIGNING},
                    # The original's credentials in the URL become an auth profile.
                    {"type": "webhook", "url": f"https://erp-user:{LEGACY_PASSWORD}@mes.example.com/in"},
                ],
            },
        ),
        201,
    )
    workflow_id, signal_id = workflow["id"], workflow["signals"][0]["id"]
    await ok(await api.patch(f"/api/v1/workflows/{workflow_id}", json={"name": "To ERP (prod)"}))
    rotated = await api.post(
        f"/api/v1/workflows/{workflow_id}/signals/{signal_id}/rotate-secret", json={"secret": ROTATED}
    )
    assert (await ok(rotated))["secret"] == ROTATED

    user = await ok(
        await api.post(
            "/api/v1/users",
            json={"name": "vera", "role": "editor", "password": USER_PASSWORD, "set_ids": [set_id]},
        ),
        201,
    )
    await ok(
        await api.patch(f"/api/v1/users/{user['id']}", json={"role": "viewer", "password": USER_PASSWORD_2})
    )
    key = await ok(await api.post("/api/v1/api-keys", json={"user": "vera", "label": "erp sync"}), 201)
    assert (await api.get("/api/v1/me", headers=auth(key["key"]))).status_code == 200
    await ok(await api.delete(f"/api/v1/api-keys/{key['id']}"))
    await ok(await api.delete(f"/api/v1/workflows/{workflow_id}"), 204)
    await ok(await api.delete(f"/api/v1/auth-profiles/{profiles[1]}"), 204)

    entries = []
    cursor = None
    while True:
        params = {"limit": "7", **({"cursor": cursor} if cursor else {})}
        page = await ok(await api.get("/api/v1/audit", params=params))
        entries += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    texts = [str(e) for e in entries]
    mine = [e for e in reversed(entries) if e["target_type"] != "set" and e["actor"] != "system"]
    actions = [(e["action"], e["target_type"]) for e in mine]
    for expected in (
        ("auth_profile.create", "auth_profile"),
        ("auth_profile.update", "auth_profile"),
        ("workflow.create", "workflow"),
        ("workflow.update", "workflow"),
        ("signal.rotate_secret", "signal"),
        ("user.create", "user"),
        ("user.update", "user"),
        ("apikey.create", "api_key"),
        ("apikey.revoke", "api_key"),
        ("workflow.delete", "workflow"),
        ("auth_profile.delete", "auth_profile"),
    ):
        assert expected in actions, (expected, actions)
    # In the order they happened, by whom and when.
    order = [a for a, _ in actions]
    assert order.index("workflow.create") < order.index("workflow.update") < order.index("workflow.delete")
    assert order.index("apikey.create") < order.index("apikey.revoke")
    assert all(e["actor"] == "alice" for e in mine if e["action"] != "user.password")
    assert all(started <= _parse(e["at"]) <= utcnow() for e in mine)
    # What changed is there: the user's new role, the key's owner, the workflow's name.
    user_update = next(e for e in mine if e["action"] == "user.update")
    assert user_update["target_id"] == str(user["id"]) and user_update["details"]["role"] == "viewer"
    assert next(e for e in mine if e["action"] == "apikey.create")["details"]["user"] == "vera"
    assert next(e for e in mine if e["action"] == "workflow.update")["details"]["name"] == "To ERP (prod)"
    # The legacy URL's profile was written down too, without the password.
    assert sum(1 for a in actions if a == ("auth_profile.create", "auth_profile")) == 4

    only_users = await ok(await api.get("/api/v1/audit", params={"target_type": "user"}))
    assert {e["target_type"] for e in only_users["items"]} == {"user"}
    for text in texts:
        for secret in (
            PROFILE_PASSWORD,
            PROFILE_PASSWORD_2,
            HEADER_VALUE,
            CLIENT_SECRET,
            SIGNING,
            ROTATED,
            "QXVkaXRTaWduaW5n",
            LEGACY_PASSWORD,
            USER_PASSWORD,
            USER_PASSWORD_2,
            key["key"],
        ):
            assert secret not in text, (secret, text)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
