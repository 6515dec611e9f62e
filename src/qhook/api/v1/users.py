"""/api/v1/me, /users and /api-keys: who am I, people and their keys (admin)."""

from __future__ import annotations

from datetime import datetime
from functools import partial

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.concurrency import run_in_threadpool

from qhook import initial_password
from qhook.api.deps import SESSION_COOKIE, BodyId, Ctx, CurrentUser, FullAdmin, Id
from qhook.api.json_body import JsonBodyRoute
from qhook.errors import field_error
from qhook.services import users
from qhook.store.users import ApiKeyRecord, UserRecord

router = APIRouter(route_class=JsonBodyRoute, tags=["users"])


class UserOut(BaseModel):
    id: int
    name: str
    role: str
    set_ids: list[int] | None
    active: bool
    created_at: datetime

    @classmethod
    def of(cls, user: UserRecord) -> UserOut:
        set_ids = list(user.set_ids) if user.set_ids is not None else None
        return cls(
            id=user.id,
            name=user.name,
            role=user.role,
            set_ids=set_ids,
            active=user.active,
            created_at=user.created_at,
        )


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    name: str = Field(min_length=1, max_length=200)
    role: str = Field(description="admin, editor or viewer")
    password: str | None = Field(None, min_length=8)
    set_ids: list[BodyId] | None = Field(None, description="Limit the user to these sets; null for all")


class UserPatch(BaseModel):
    """Only the keys sent change; ``"set_ids": null`` lifts the restriction."""

    model_config = ConfigDict(extra="forbid")

    role: str | None = Field(None, description="admin, editor or viewer")
    set_ids: list[BodyId] | None = Field(None, description="Limit the user to these sets; null for all")
    active: StrictBool | None = Field(None, description="false: the user's keys and sessions stop working")
    password: str | None = Field(None, min_length=8)


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str
    new_password: str = Field(min_length=8)


class ApiKeyOut(BaseModel):
    id: int
    user: str
    label: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKeyRecord) -> ApiKeyOut:
        return cls(
            id=key.id,
            user=key.user_name,
            label=key.label,
            prefix=key.prefix,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
        )


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    user: str = Field(min_length=1, max_length=200)
    label: str = Field("", max_length=200)


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself; shown this once and never again")


class MeOut(BaseModel):
    name: str
    role: str
    set_ids: list[int] | None


@router.get("/me")
def me(principal: CurrentUser) -> MeOut:
    set_ids = sorted(principal.set_ids) if principal.set_ids is not None else None
    return MeOut(name=principal.name, role=principal.role, set_ids=set_ids)


@router.get("/users")
def list_users(ctx: Ctx, _: FullAdmin) -> list[UserOut]:
    return [UserOut.of(u) for u in users.list_users(ctx.db)]


@router.post("/users", status_code=201)
async def create_user(body: UserIn, ctx: Ctx, principal: FullAdmin) -> UserOut:
    user = await run_in_threadpool(
        users.create_user, ctx.db, body.name, body.role, body.password, body.set_ids, principal.name
    )
    return UserOut.of(user)


@router.get("/users/{user_id}")
def get_user(user_id: Id, ctx: Ctx, _: FullAdmin) -> UserOut:
    return UserOut.of(users.get_user(ctx.db, user_id))


@router.patch("/users/{user_id}")
async def update_user(user_id: Id, body: UserPatch, ctx: Ctx, principal: FullAdmin) -> UserOut:
    sent = body.model_fields_set
    for name in ("role", "active", "password"):
        if name in sent and getattr(body, name) is None:
            raise field_error(name, "a value (null is only meaningful for set_ids)")
    user = await run_in_threadpool(
        partial(
            users.update_user,
            ctx.db,
            user_id,
            actor=principal.name,
            role=body.role,
            set_ids=body.set_ids if "set_ids" in sent else users.KEEP,
            active=body.active,
            password=body.password,
        )
    )
    if body.password is not None:
        await run_in_threadpool(initial_password.retire, ctx)
    return UserOut.of(user)


@router.post("/me/password", status_code=204)
async def change_my_password(
    body: PasswordChange, request: Request, ctx: Ctx, principal: CurrentUser
) -> None:
    """Change your own password; your other UI sessions end."""
    await run_in_threadpool(
        users.change_own_password,
        ctx.db,
        principal.user_id,
        body.current_password,
        body.new_password,
        request.cookies.get(SESSION_COOKIE) if principal.key_id is None else None,
    )
    await run_in_threadpool(initial_password.retire, ctx)


@router.get("/api-keys")
def list_keys(ctx: Ctx, _: FullAdmin, user: str | None = None) -> list[ApiKeyOut]:
    return [ApiKeyOut.of(k) for k in users.list_api_keys(ctx.db, user)]


@router.post("/api-keys", status_code=201)
def create_key(body: ApiKeyIn, ctx: Ctx, principal: FullAdmin) -> ApiKeyCreated:
    key, plain = users.create_api_key(ctx.db, body.user, body.label, principal.name)
    return ApiKeyCreated(**ApiKeyOut.of(key).model_dump(), key=plain)


@router.delete("/api-keys/{key_id}")
def revoke_key(key_id: Id, ctx: Ctx, principal: FullAdmin) -> ApiKeyOut:
    return ApiKeyOut.of(users.revoke_api_key(ctx.db, key_id, principal.name))
