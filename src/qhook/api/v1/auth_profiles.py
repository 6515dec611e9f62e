"""/api/v1/auth-profiles (admin): endpoint credentials; secrets are write-only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from qhook.api.deps import Ctx, FullAdmin, Id
from qhook.api.json_body import JsonBodyRoute
from qhook.services import auth_profiles
from qhook.services.auth_profiles import AuthProfileView

router = APIRouter(route_class=JsonBodyRoute, tags=["auth profiles"])

EXAMPLES = {
    "basic": {
        "value": {
            "name": "ERP prod",
            "type": "basic",
            "username": "qhook",
            "password": "s3cret-pass",
            "allowed_domains": ["erp.example.com"],
            "set_ids": [1, 2],
        }
    },
    "header": {
        "value": {
            "name": "LIMS key",
            "type": "header",
            "header_name": "X-API-Key",
            "header_value": "key-123",
            "allowed_domains": ["*.lims.example.com"],
        }
    },
    "oauth2": {
        "value": {
            "name": "ERP OAuth",
            "type": "oauth2_client_credentials",
            "token_url": "https://login.example.com/oauth2/token",
            "client_id": "qhook",
            "client_secret": "…",
            "scope": "batches.write",
            "client_auth": "basic",
            "allowed_domains": ["erp.example.com"],
        }
    },
}
ProfileBody = Annotated[dict[str, Any], Body(openapi_examples=EXAMPLES)]


class AuthProfileOut(BaseModel):
    id: int
    name: str
    type: str = Field(description="basic, header or oauth2_client_credentials")
    allowed_domains: list[str]
    set_ids: list[int] | None = Field(description="the sets whose workflows may use it; null: every set")
    username: str | None = None
    header_name: str | None = None
    token_url: str | None = None
    client_id: str | None = None
    scope: str | None = None
    audience: str | None = None
    client_auth: str | None = None
    ca_cert: str | None = None
    client_cert: str | None = None
    password_set: bool | None = None
    header_value_set: bool | None = None
    client_secret_set: bool | None = None
    client_key_set: bool = False
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, profile: AuthProfileView) -> AuthProfileOut:
        config = profile.config
        flags = {
            f"{name}_set": name in profile.secrets_set
            for name in (*auth_profiles.SECRET_FIELDS[profile.type], *auth_profiles.COMMON_SECRETS)
        }
        return cls(
            id=profile.id,
            name=profile.name,
            type=profile.type,
            allowed_domains=list(auth_profiles.domains_of(profile)),
            set_ids=_list_or_none(auth_profiles.sets_of(profile)),
            **{k: config.get(k) for k in auth_profiles.CONFIG_FIELDS[profile.type]},
            ca_cert=config.get("ca_cert"),
            client_cert=config.get("client_cert"),
            **flags,
            created_at=profile.created_at,
            updated_at=profile.updated_at,
        )


def _list_or_none(values: tuple[int, ...] | None) -> list[int] | None:
    return None if values is None else list(values)


@router.get("/auth-profiles")
async def list_profiles(ctx: Ctx, _: FullAdmin) -> list[AuthProfileOut]:
    profiles = await run_in_threadpool(auth_profiles.list_profiles, ctx)
    return [AuthProfileOut.of(p) for p in profiles]


@router.post("/auth-profiles", status_code=201)
async def create_profile(body: ProfileBody, ctx: Ctx, principal: FullAdmin) -> AuthProfileOut:
    profile = await run_in_threadpool(auth_profiles.create_profile, ctx, body, principal.name)
    return AuthProfileOut.of(profile)


@router.get("/auth-profiles/{profile_id}")
async def get_profile(profile_id: Id, ctx: Ctx, _: FullAdmin) -> AuthProfileOut:
    return AuthProfileOut.of(await run_in_threadpool(auth_profiles.get_profile, ctx, profile_id))


@router.patch("/auth-profiles/{profile_id}")
async def update_profile(profile_id: Id, body: ProfileBody, ctx: Ctx, principal: FullAdmin) -> AuthProfileOut:
    """Given keys replace stored ones; secrets left out stay; null removes an optional key."""
    profile = await run_in_threadpool(auth_profiles.update_profile, ctx, profile_id, body, principal.name)
    return AuthProfileOut.of(profile)


@router.delete("/auth-profiles/{profile_id}", status_code=204)
async def delete_profile(profile_id: Id, ctx: Ctx, principal: FullAdmin) -> Response:
    await run_in_threadpool(auth_profiles.delete_profile, ctx, profile_id, principal.name)
    return Response(status_code=204)
