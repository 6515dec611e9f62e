"""/api/v1/sets: sets and their fields (admin writes; everyone reads the sets they may use)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from qhook.api.deps import Admin, Ctx, CurrentUser, FullAdmin, Id, Viewer
from qhook.api.json_body import JsonBodyRoute
from qhook.domain.access import Principal
from qhook.domain.fields import FieldDef
from qhook.errors import Forbidden
from qhook.services import sets
from qhook.store.sets import SetRecord

router = APIRouter(route_class=JsonBodyRoute, tags=["sets"])


class OptionOut(BaseModel):
    id: int
    label: str
    active: bool


class FieldOut(BaseModel):
    id: int
    name: str
    label: str
    type: str
    required: bool
    active: bool
    position: int
    options: list[OptionOut] = Field(description="List fields only; empty for other types")

    @classmethod
    def of(cls, field: FieldDef) -> FieldOut:
        return cls(
            id=field.id,
            name=field.name,
            label=field.label,
            type=field.type,
            required=field.required,
            active=field.active,
            position=field.position,
            options=[OptionOut(id=o.id, label=o.label, active=o.active) for o in field.options],
        )


class SetOut(BaseModel):
    id: int
    name: str
    kind: str
    group_id: Id
    group_name: str
    top_level_menu: str
    fields: list[FieldOut]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: SetRecord) -> SetOut:
        return cls(
            id=record.id,
            name=record.name,
            kind=record.kind,
            group_id=record.group_id,
            group_name=record.group_name,
            top_level_menu=record.top_level_menu,
            fields=[FieldOut.of(f) for f in record.fields],
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


class SetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    name: str = Field(min_length=1, max_length=200)
    kind: str = Field("analysis_set", description="analysis_set or selection_list")
    fields: list[dict[str, Any]] = Field(
        default_factory=list,
        description='[{"name": "ph_", "label": "pH", "type": "number", "required": false, "options": [..]}]; '
        "types: text number integer boolean date datetime list (list takes option labels)",
    )


class SetPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    name: str | None = Field(None, min_length=1, max_length=200)
    fields: list[dict[str, Any]] | None = Field(
        None,
        description="Matched by name. New names add fields; known names relabel, (de)activate or re-require "
        'them and edit options ("label" adds one, {"id", "label", "active"} edits one). Type cannot change.',
    )


def ensure_set_access(principal: Principal, set_id: Id, *, write: bool = False) -> None:
    """403 unless the principal's set restriction lets it use this set."""
    if not principal.can_use_set(set_id):
        kind = "write" if write else "read"
        raise Forbidden(f"No {kind} permission for this set")


@router.post("/sets", status_code=201)
def create_set(body: SetIn, ctx: Ctx, principal: FullAdmin) -> SetOut:
    """An admin of every set makes one (a new set lies outside any other admin's limit)."""
    created = sets.create_set(
        ctx.db, name=body.name, kind=body.kind, fields=body.fields, actor=principal.name
    )
    return SetOut.of(created)


@router.get("/sets")
def list_sets(ctx: Ctx, principal: CurrentUser) -> list[SetOut]:
    allowed = sorted(principal.set_ids) if principal.set_ids is not None else None
    return [SetOut.of(s) for s in sets.list_sets(ctx.db, allowed)]


@router.get("/sets/{set_id}")
def get_set(set_id: Id, ctx: Ctx, principal: Viewer) -> SetOut:
    ensure_set_access(principal, set_id)
    return SetOut.of(sets.get_set(ctx.db, set_id))


@router.patch("/sets/{set_id}")
def update_set(set_id: Id, body: SetPatch, ctx: Ctx, principal: Admin) -> SetOut:
    ensure_set_access(principal, set_id, write=True)
    updated = sets.update_set(ctx, set_id, name=body.name, fields=body.fields, actor=principal.name)
    return SetOut.of(updated)


@router.delete("/sets/{set_id}", status_code=204)
def delete_set(set_id: Id, ctx: Ctx, principal: Admin, force: bool = False) -> Response:
    ensure_set_access(principal, set_id, write=True)
    sets.delete_set(ctx, set_id, force=force, actor=principal.name)
    return Response(status_code=204)
