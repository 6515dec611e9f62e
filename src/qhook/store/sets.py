"""Sets and their fields."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Integer, bindparam, delete, func, insert, select, update

from qhook.domain.fields import FieldDef, FieldType, OptionDef
from qhook.store import definitions
from qhook.store.db import Tx
from qhook.store.tables import fields, results, sets


@dataclass(frozen=True, slots=True)
class SetRecord:
    id: int
    name: str
    kind: str
    group_id: int
    group_name: str
    top_level_menu: str
    created_at: datetime
    updated_at: datetime
    fields: tuple[FieldDef, ...]

    @property
    def active_fields(self) -> tuple[FieldDef, ...]:
        return tuple(f for f in self.fields if f.active)


def _options(raw: Any) -> tuple[OptionDef, ...]:
    return tuple(OptionDef(int(o["id"]), str(o["label"]), bool(o.get("active", True))) for o in raw or ())


def _options_json(options: Sequence[OptionDef]) -> list[dict[str, Any]] | None:
    return [{"id": o.id, "label": o.label, "active": o.active} for o in options] or None


def _field(row: Any) -> FieldDef:
    return FieldDef(
        id=row.id,
        name=row.name,
        label=row.label,
        type=cast(FieldType, row.type),
        required=row.required,
        active=row.active,
        position=row.position,
        options=_options(row.options),
    )


# Built once with bound parameters: reading a set's definition runs for every result written, and
# building these statements anew cost more CPU than running them (bench/latency).
_FIELDS_OF = (
    select(fields)
    .where(fields.c.set_id.in_(bindparam("set_ids", expanding=True)))
    .order_by(fields.c.position, fields.c.id)
)
_SET_BY_ID = select(sets).where(sets.c.id == bindparam("set_id", type_=Integer))


def _fields_of(tx: Tx, set_ids: Sequence[int]) -> dict[int, list[FieldDef]]:
    by_set: dict[int, list[FieldDef]] = {set_id: [] for set_id in set_ids}
    if not set_ids:
        return by_set
    for row in tx.execute(_FIELDS_OF, {"set_ids": list(set_ids)}):
        by_set[row.set_id].append(_field(row))
    return by_set


def _set(row: Any, set_fields: Sequence[FieldDef]) -> SetRecord:
    return SetRecord(
        id=row.id,
        name=row.name,
        kind=row.kind,
        group_id=row.group_id,
        group_name=row.group_name,
        top_level_menu=row.top_level_menu,
        created_at=row.created_at,
        updated_at=row.updated_at,
        fields=tuple(set_fields),
    )


def insert_set(tx: Tx, *, name: str, kind: str, now: datetime) -> int:
    definitions.changed(tx)
    return int(
        tx.execute(
            insert(sets).values(name=name, kind=kind, created_at=now, updated_at=now).returning(sets.c.id)
        ).scalar_one()
    )


def insert_field(tx: Tx, set_id: int, field: FieldDef) -> int:
    definitions.changed(tx)
    return int(
        tx.execute(
            insert(fields)
            .values(
                set_id=set_id,
                name=field.name,
                label=field.label,
                type=field.type,
                required=field.required,
                active=field.active,
                position=field.position,
                options=_options_json(field.options),
            )
            .returning(fields.c.id)
        ).scalar_one()
    )


def update_field(tx: Tx, field: FieldDef) -> None:
    """Write label, required, active and options; name and type never change."""
    definitions.changed(tx)
    tx.execute(
        update(fields)
        .where(fields.c.id == field.id)
        .values(
            label=field.label,
            required=field.required,
            active=field.active,
            options=_options_json(field.options),
        )
    )


def update_set(tx: Tx, set_id: int, *, now: datetime, name: str | None = None) -> None:
    definitions.changed(tx)
    values: dict[str, Any] = {"updated_at": now}
    if name is not None:
        values["name"] = name
    tx.execute(update(sets).where(sets.c.id == set_id).values(**values))


def get_set(tx: Tx, set_id: int) -> SetRecord | None:
    row = tx.execute(_SET_BY_ID, {"set_id": set_id}).one_or_none()
    if row is None:
        return None
    return _set(row, _fields_of(tx, [set_id])[set_id])


def list_sets(tx: Tx, set_ids: Sequence[int] | None = None) -> list[SetRecord]:
    """Every set (or those with the given ids), by id."""
    query = select(sets).order_by(sets.c.id)
    if set_ids is not None:
        query = query.where(sets.c.id.in_(list(set_ids)))
    rows = list(tx.execute(query))
    by_set = _fields_of(tx, [r.id for r in rows])
    return [_set(r, by_set[r.id]) for r in rows]


def lock_set(tx: Tx, set_id: int) -> None:
    """Serialise writers that change this set's definition (PostgreSQL; SQLite writers are serial)."""
    if tx.dialect.name == "postgresql":
        tx.execute(select(sets.c.id).where(sets.c.id == set_id).with_for_update())


def count_results(tx: Tx, set_id: int) -> int:
    return int(
        tx.execute(select(func.count()).select_from(results).where(results.c.set_id == set_id)).scalar_one()
    )


def result_ids(tx: Tx, set_id: int) -> list[int]:
    return list(
        tx.execute(select(results.c.id).where(results.c.set_id == set_id).order_by(results.c.id)).scalars()
    )


def missing_ids(tx: Tx, set_ids: Sequence[int]) -> list[int]:
    """The ids among ``set_ids`` no set has, in order."""
    if not set_ids:
        return []
    found = set(tx.execute(select(sets.c.id).where(sets.c.id.in_(sorted(set(set_ids))))).scalars())
    return sorted(set(set_ids) - found)


def delete_set(tx: Tx, set_id: int) -> bool:
    """Delete the set; its fields, results and workflows go with it (ON DELETE CASCADE)."""
    definitions.changed(tx)
    # SQLite cascades only with foreign_keys on; delete children explicitly so both behave alike.
    tx.execute(delete(results).where(results.c.set_id == set_id))
    tx.execute(delete(fields).where(fields.c.set_id == set_id))
    return bool(tx.execute(delete(sets).where(sets.c.id == set_id)).rowcount)
