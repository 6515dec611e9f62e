"""Auth profiles over the API on SQLite and PostgreSQL: CRUD, write-only secrets, encryption at rest."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import select

from qhook.context import AppContext
from qhook.errors import ValidationFailed
from qhook.services import audit
from qhook.services import auth_profiles as service
from qhook.store.tables import auth_profiles
from tests.conftest import auth
from tests.support.certs import make_pki

BASIC = {
    "name": "ERP prod",
    "type": "basic",
    "username": "qhook",
    "password": "pw-BASIC-7f3a9",
    "allowed_domains": ["erp.example.com", "*.erp.example.com"],
}
HEADER = {
    "name": "LIMS key",
    "type": "header",
    "header_name": "X-API-Key",
    "header_value": "hv-HEADER-52c1e",
    "allowed_domains": ["lims.example.com"],
}
OAUTH = {
    "name": "ERP OAuth",
    "type": "oauth2_client_credentials",
    "token_url": "https://login.example.com/oauth2/token",
    "client_id": "qhook-client",
    "client_secret": "cs-OAUTH-90d4b",
    "scope": "batches.write",
    "audience": "https://erp.example.com",
    "client_auth": "body",
    "allowed_domains": ["erp.example.com"],
}
SECRETS = ("pw-BASIC-7f3a9", "hv-HEADER-52c1e", "cs-OAUTH-90d4b")


async def test_crud_basic_profile(api: httpx.AsyncClient, ctx: AppContext) -> None:
    created = await api.post("/api/v1/auth-profiles", json=BASIC)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "ERP prod" and body["type"] == "basic" and body["username"] == "qhook"
    assert body["password_set"] is True and body["client_key_set"] is False
    assert body["allowed_domains"] == ["erp.example.com", "*.erp.example.com"]
    assert "password" not in body
    profile_id = body["id"]

    listed = (await api.get("/api/v1/auth-profiles")).json()
    assert [p["id"] for p in listed] == [profile_id]
    assert (await api.get(f"/api/v1/auth-profiles/{profile_id}")).json()["password_set"] is True

    renamed = await api.patch(f"/api/v1/auth-profiles/{profile_id}", json={"username": "qhook2"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["username"] == "qhook2"
    loaded = service.load_profile(ctx, profile_id)
    assert loaded.secrets == {"password": "pw-BASIC-7f3a9"}  # kept when left out
    assert "pw-BASIC" not in repr(loaded)

    changed = await api.patch(f"/api/v1/auth-profiles/{profile_id}", json={"password": "new-pass-1"})
    assert changed.status_code == 200
    assert service.load_profile(ctx, profile_id).secrets == {"password": "new-pass-1"}

    assert (await api.delete(f"/api/v1/auth-profiles/{profile_id}")).status_code == 204
    missing = await api.get(f"/api/v1/auth-profiles/{profile_id}")
    assert missing.status_code == 404
    actions = [e.action for e in audit.list_entries(ctx.db, target_type="auth_profile")]
    assert actions == [
        "auth_profile.delete",
        "auth_profile.update",
        "auth_profile.update",
        "auth_profile.create",
    ]


async def test_secrets_never_returned_nor_audited_and_encrypted_at_rest(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    pki = make_pki(("qhook-client",), client=True)
    ids = []
    for doc in (BASIC, HEADER, {**OAUTH, "client_cert": pki.cert_pem, "client_key": pki.key_pem}):
        response = await api.post("/api/v1/auth-profiles", json=doc)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    oauth = (await api.get(f"/api/v1/auth-profiles/{ids[2]}")).json()
    assert oauth["client_secret_set"] is True and oauth["client_key_set"] is True
    assert oauth["client_auth"] == "body" and oauth["scope"] == "batches.write"
    assert (await api.get(f"/api/v1/auth-profiles/{ids[1]}")).json()["header_value_set"] is True
    await api.patch(f"/api/v1/auth-profiles/{ids[1]}", json={"header_value": "hv-HEADER-52c1e-v2"})

    texts = [(await api.get("/api/v1/auth-profiles")).text]
    texts += [(await api.get(f"/api/v1/auth-profiles/{i}")).text for i in ids]
    texts.append(json.dumps([e.details for e in audit.list_entries(ctx.db)]))
    audit_api = await api.get("/api/v1/audit")
    assert audit_api.status_code == 200 and "auth_profile.create" in audit_api.text
    texts.append(audit_api.text)
    private_key_marker = pki.key_pem.splitlines()[1]
    for text in texts:
        for secret in (*SECRETS, private_key_marker):
            assert secret not in text

    with ctx.db.reading() as tx:
        rows = tx.execute(select(auth_profiles.c.config, auth_profiles.c.secrets_enc)).all()
    assert len(rows) == 3
    for row in rows:
        raw = json.dumps(row.config) + row.secrets_enc
        for secret in (*SECRETS, private_key_marker, "hv-HEADER-52c1e-v2"):
            assert secret not in raw
    assert service.load_profile(ctx, ids[2]).secrets["client_key"] == pki.key_pem


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({**BASIC, "password": ""}, "password"),
        ({k: v for k, v in BASIC.items() if k != "username"}, "username"),
        ({**BASIC, "type": "kerberos"}, "type"),
        ({**BASIC, "colour": "blue"}, "colour"),
        ({**BASIC, "allowed_domains": []}, "allowed_domains"),
        ({**BASIC, "allowed_domains": ["ok.example.com", "bad domain"]}, "allowed_domains[1]"),
        ({**BASIC, "allowed_domains": ["erp.example.com:0"]}, "allowed_domains[0]"),
        ({**BASIC, "allowed_domains": ["*.com"]}, "allowed_domains[0]"),
        ({**BASIC, "allowed_domains": ["erp.example.com:https"]}, "allowed_domains[0]"),
        ({**BASIC, "allowed_domains": ["[::1]x"]}, "allowed_domains[0]"),
        ({**HEADER, "header_name": "Bad Header"}, "header_name"),
        ({**HEADER, "header_name": "Content-Type"}, "header_name"),
        ({**HEADER, "header_value": "a\r\nInjected: 1"}, "header_value"),
        ({**OAUTH, "token_url": "ftp://login.example.com/"}, "token_url"),
        ({**OAUTH, "client_auth": "jwt"}, "client_auth"),
        ({**OAUTH, "client_secret": None}, "client_secret"),
        ({**OAUTH, "ca_cert": "not a pem"}, "ca_cert"),
        ({**OAUTH, "client_cert": make_pki().cert_pem}, "client_key"),
    ],
)
async def test_validation_names_the_field(api: httpx.AsyncClient, doc: dict[str, object], field: str) -> None:
    response = await api.post("/api/v1/auth-profiles", json=doc)
    assert response.status_code == 422, response.text
    assert response.json()["details"][0]["field"] == field
    assert (await api.get("/api/v1/auth-profiles")).json() == []


async def test_duplicate_name_and_type_change(api: httpx.AsyncClient) -> None:
    first = (await api.post("/api/v1/auth-profiles", json=BASIC)).json()
    duplicate = await api.post("/api/v1/auth-profiles", json={**HEADER, "name": "ERP prod"})
    assert duplicate.status_code == 409 and "ERP prod" in duplicate.json()["error"]
    assert duplicate.json()["details"] == [
        {"field": "name", "error": "an auth profile named 'ERP prod' exists already"}
    ]
    second = (await api.post("/api/v1/auth-profiles", json={**HEADER, "name": "ERP test"})).json()
    renamed = await api.patch(f"/api/v1/auth-profiles/{second['id']}", json={"name": "ERP prod"})
    assert renamed.status_code == 409 and renamed.json()["details"][0]["field"] == "name"
    retype = await api.patch(f"/api/v1/auth-profiles/{first['id']}", json={"type": "header"})
    assert retype.status_code == 422 and retype.json()["details"][0]["field"] == "type"


async def test_admin_only(client: httpx.AsyncClient, editor_key: str) -> None:
    response = await client.post("/api/v1/auth-profiles", json=BASIC, headers=auth(editor_key))
    assert response.status_code == 403
    assert (await client.get("/api/v1/auth-profiles", headers=auth(editor_key))).status_code == 403


async def test_allowed_domains_check(api: httpx.AsyncClient, ctx: AppContext) -> None:
    profile_id = (await api.post("/api/v1/auth-profiles", json=BASIC)).json()["id"]
    profile = service.load_profile(ctx, profile_id)
    service.check_allowed(profile, "https://erp.example.com/api/batches")
    service.check_allowed(profile, "https://eu.erp.example.com:8443/x")
    for url in ("https://evil.example.org/", "https://erp.example.com.evil.org/", "https://example.com/"):
        assert not service.is_allowed(profile, url)
        with pytest.raises(ValidationFailed) as info:
            service.check_allowed(profile, url, "signals[0].url")
        assert info.value.details[0]["field"] == "signals[0].url"
    assert service.refusal_message(profile, "https://evil.example.org/").startswith(
        "allowed_domains: evil.example.org is not in the allowed domains of auth profile 'ERP prod'"
    )


async def test_allowed_domains_may_pin_a_port(api: httpx.AsyncClient, ctx: AppContext) -> None:
    """``host:port`` lets the credentials go to that port only (the scheme's default counts when
    the URL writes none); a pattern without a port allows any port, as before."""
    doc = {
        **BASIC,
        "allowed_domains": ["ERP.example.com:443", "*.lims.example.com:8443", "[::1]:9443", "10.0.0.5"],
    }
    created = await api.post("/api/v1/auth-profiles", json=doc)
    assert created.status_code == 201, created.text
    assert created.json()["allowed_domains"] == [
        "erp.example.com:443",
        "*.lims.example.com:8443",
        "[::1]:9443",
        "10.0.0.5",
    ]
    profile = service.load_profile(ctx, created.json()["id"])
    for url in (
        "https://erp.example.com/api",
        "https://erp.example.com:443/api",
        "http://erp.example.com:443/api",
        "https://eu.lims.example.com:8443/",
        "https://[::1]:9443/hook",
        "https://10.0.0.5:8080/",
    ):
        assert service.is_allowed(profile, url), url
    for url in (
        "https://erp.example.com:8080/api",
        "http://erp.example.com/api",  # port 80
        "https://eu.lims.example.com/",
        "https://[::1]/hook",
    ):
        assert not service.is_allowed(profile, url), url
    assert service.refusal_message(profile, "https://erp.example.com:8080/api").startswith(
        "allowed_domains: erp.example.com:8080 is not in the allowed domains of auth profile 'ERP prod'"
    )
