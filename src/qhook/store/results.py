"""Results: one record of a set, its values as JSON and a version that grows on each change."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    true,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import KeyedColumnElement

from qhook.store.db import Tx
from qhook.store.tables import results

_values = results.c["values"]
# The column is JSONB on PostgreSQL; say so, so jsonb operators (@>, ?) are allowed on it.
_jsonb = type_coerce(_values, JSONB)


@dataclass(frozen=True, slots=True)
class ResultRecord:
    id: int
    set_id: int
    date: datetime
    values: Mapping[str, Any]  # stored form (see qhook.domain.fields); never mutate
    version: int
    created_at: datetime
    updated_at: datetime
    created_by: str
    updated_by: str


def _result(row: Any) -> ResultRecord:
    return ResultRecord(
        id=row.id,
        set_id=row.set_id,
        date=row.date,
        values=dict(row.values or {}),
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
        updated_by=row.updated_by,
    )


def _clean(values: Mapping[str, Any]) -> dict[str, Any]:
    """Empty values are absent, so "no value" has one form for filters on both databases."""
    return {k: v for k, v in values.items() if v is not None}


def insert_result(
    tx: Tx, *, set_id: int, date: datetime, values: Mapping[str, Any], actor: str, now: datetime
) -> ResultRecord:
    row = tx.execute(
        insert(results)
        .values(
            set_id=set_id,
            date=date,
            values=_clean(values),
            version=1,
            created_at=now,
            updated_at=now,
            created_by=actor,
            updated_by=actor,
        )
        .returning(results)
    ).one()
    return _result(row)


def get_result(tx: Tx, set_id: int, result_id: int, *, for_update: bool = False) -> ResultRecord | None:
    """The result; ``for_update`` locks its row on PostgreSQL (SQLite write transactions are serial)."""
    query = select(results).where(results.c.id == result_id, results.c.set_id == set_id)
    if for_update and tx.dialect.name == "postgresql":
        query = query.with_for_update()
    row = tx.execute(query).one_or_none()
    return _result(row) if row else None


def update_result(
    tx: Tx,
    *,
    result_id: int,
    from_version: int,
    date: datetime,
    values: Mapping[str, Any],
    actor: str,
    now: datetime,
) -> ResultRecord | None:
    """Write a new version; None when the row is gone or no longer at ``from_version``."""
    row = tx.execute(
        update(results)
        .where(results.c.id == result_id, results.c.version == from_version)
        .values(date=date, values=_clean(values), version=from_version + 1, updated_at=now, updated_by=actor)
        .returning(results)
    ).one_or_none()
    return _result(row) if row else None


def delete_result(tx: Tx, result_id: int) -> bool:
    return bool(tx.execute(delete(results).where(results.c.id == result_id)).rowcount)


def _value_of(tx: Tx, name: str) -> ColumnElement[Any]:
    # Field names are validated ([A-Za-z][A-Za-z0-9_]*), so they are safe inside a JSON path.
    if tx.dialect.name == "postgresql":
        return _jsonb[name]
    return func.json_extract(_values, f"$.{name}")


def _matches(tx: Tx, name: str, wanted: Sequence[Any]) -> ColumnElement[bool]:
    """The value of field ``name`` is any of ``wanted`` (None: no value)."""
    terms: list[ColumnElement[bool]] = []
    present = [w for w in wanted if w is not None]
    if tx.dialect.name == "postgresql":
        # jsonb containment compares numbers numerically (3 matches 3.0) and keeps types apart.
        terms.extend(_jsonb.contains({name: w}) for w in present)
        if len(present) < len(wanted):
            terms.append(~_jsonb.has_key(name))
    else:
        extracted = func.json_extract(_values, f"$.{name}")
        # json_extract gives 1/0 for true/false, and compares 3 and 3.0 as equal.
        sql_values = [int(w) if isinstance(w, bool) else w for w in present]
        if sql_values:
            terms.append(extracted.in_(sql_values))
        if len(present) < len(wanted):
            terms.append(extracted.is_(None))
    return or_(*terms) if terms else false()


def _sort_column(tx: Tx, key: str) -> ColumnElement[Any] | KeyedColumnElement[Any]:
    if key == "id":
        return results.c.id
    if key == "date":
        return results.c.date
    return _value_of(tx, key)


def list_results(
    tx: Tx,
    set_id: int,
    *,
    filters: Mapping[str, Sequence[Any]] | None = None,
    after_id: int | None = None,
    limit: int = 100,
    offset: int = 0,
    sort: Sequence[tuple[str, bool]] = (),
) -> list[ResultRecord]:
    """Results of a set, filtered by stored values (field -> any of these), ordered and paged.

    ``sort`` is a list of (key, descending) with key "id", "date" or a field name; the id breaks
    ties so pages are stable. ``after_id`` is the cursor for id order; ``offset`` for other orders.
    """
    conditions = [results.c.set_id == set_id]
    for name, wanted in (filters or {}).items():
        conditions.append(_matches(tx, name, wanted))
    if after_id is not None:
        conditions.append(results.c.id > after_id)
    order = [_sort_column(tx, key).desc() if desc else _sort_column(tx, key).asc() for key, desc in sort]
    if not any(key == "id" for key, _ in sort):
        order.append(results.c.id.asc())
    query = select(results).where(and_(true(), *conditions)).order_by(*order).limit(limit).offset(offset)
    return [_result(r) for r in tx.execute(query)]


def count_results(tx: Tx, set_id: int, *, filters: Mapping[str, Sequence[Any]] | None = None) -> int:
    conditions = [results.c.set_id == set_id, *(_matches(tx, n, w) for n, w in (filters or {}).items())]
    return int(tx.execute(select(func.count()).select_from(results).where(*conditions)).scalar_one())
