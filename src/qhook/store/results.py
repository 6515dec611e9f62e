"""Results: one record of a set, its values as JSON and a version that grows on each change."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
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

from qhook.store import bulk, jsontext
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


# Built once: SQLAlchemy caches the compiled form, and plain parameters skip per-call coercion.
_INSERT = insert(results).returning(results.c.id)
_GET = select(results).where(results.c.id == bindparam("b_id"), results.c.set_id == bindparam("b_set_id"))
_GET_FOR_UPDATE = _GET.with_for_update()
_UPDATE = (
    update(results)
    .where(results.c.id == bindparam("b_id"), results.c.version == bindparam("b_version"))
    .values(
        date=bindparam("b_date"),
        values=bindparam("b_values", type_=results.c["values"].type),
        version=bindparam("b_version") + 1,
        updated_at=bindparam("b_now"),
        updated_by=bindparam("b_actor"),
    )
    .returning(results.c.created_at, results.c.created_by)
)


def insert_result(
    tx: Tx, *, set_id: int, date: datetime, values: Mapping[str, Any], actor: str, now: datetime
) -> ResultRecord:
    clean = _clean(values)
    new_id = tx.execute(
        _INSERT,
        {
            "set_id": set_id,
            "date": date,
            "values": clean,
            "version": 1,
            "created_at": now,
            "updated_at": now,
            "created_by": actor,
            "updated_by": actor,
        },
    ).scalar_one()
    return ResultRecord(int(new_id), set_id, date, clean, 1, now, now, actor, actor)


def get_result(tx: Tx, set_id: int, result_id: int, *, for_update: bool = False) -> ResultRecord | None:
    """The result; ``for_update`` locks its row on PostgreSQL (SQLite write transactions are serial)."""
    query = _GET_FOR_UPDATE if for_update and tx.dialect.name == "postgresql" else _GET
    row = tx.execute(query, {"b_id": result_id, "b_set_id": set_id}).one_or_none()
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
    set_id: int,
) -> ResultRecord | None:
    """Write a new version; None when the row is gone or no longer at ``from_version``."""
    clean = _clean(values)
    row = tx.execute(
        _UPDATE,
        {
            "b_id": result_id,
            "b_version": from_version,
            "b_date": date,
            "b_values": clean,
            "b_now": now,
            "b_actor": actor,
        },
    ).one_or_none()
    if row is None:
        return None
    return ResultRecord(
        result_id, set_id, date, clean, from_version + 1, row.created_at, now, row.created_by, actor
    )


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


def _sort_terms(tx: Tx, key: str) -> list[ColumnElement[Any] | KeyedColumnElement[Any]]:
    """What ``key`` orders by, ascending: on both databases no value first, then numbers (and
    booleans) in numeric order, then text (a qualified number such as "<0.5"). SQLite orders
    json_extract's values so by itself; PostgreSQL orders jsonb strings before numbers and a
    missing value last, so a rank by JSON type comes first there."""
    if key == "id":
        return [results.c.id]
    if key == "date":
        return [results.c.date]
    value = _value_of(tx, key)
    if tx.dialect.name != "postgresql":
        return [value]
    kind = func.jsonb_typeof(value)
    rank = case((kind.in_(("number", "boolean")), 1), (kind == "string", 2), else_=0)
    # A JSON null and a missing key are both no value: equal here, in id order as on SQLite.
    return [rank, case((rank > 0, value))]


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
    ties so pages are stable, in the last key's direction: newest first (date descending) puts the
    last of results stored in the same second first. ``after_id`` is the cursor for id order;
    ``offset`` for other orders.
    """
    conditions = [results.c.set_id == set_id]
    for name, wanted in (filters or {}).items():
        conditions.append(_matches(tx, name, wanted))
    if after_id is not None:
        conditions.append(results.c.id > after_id)
    order = [term.desc() if desc else term.asc() for key, desc in sort for term in _sort_terms(tx, key)]
    if not any(key == "id" for key, _ in sort):
        order.append(results.c.id.desc() if sort and sort[-1][1] else results.c.id.asc())
    query = select(results).where(and_(true(), *conditions)).order_by(*order).limit(limit).offset(offset)
    return [_result(r) for r in tx.execute(query)]


def count_results(tx: Tx, set_id: int, *, filters: Mapping[str, Sequence[Any]] | None = None) -> int:
    conditions = [results.c.set_id == set_id, *(_matches(tx, n, w) for n, w in (filters or {}).items())]
    return int(tx.execute(select(func.count()).select_from(results).where(*conditions)).scalar_one())


def ids_by_key(tx: Tx, set_id: int, name: str, wanted: Sequence[Any]) -> list[tuple[int, Any]]:
    """(id, stored value of ``name``) of the set's results whose ``name`` is any of ``wanted``, by id.

    One query for a whole batch of keys (storeResults with keyField): a single pass over the set's
    rows instead of one per input result. ``wanted`` holds text or numbers (no None, no booleans).
    """
    if not wanted:
        return []
    if tx.dialect.name == "postgresql":
        # jsonb equality compares numbers numerically (3 = 3.0) and keeps text and numbers apart.
        extracted: ColumnElement[Any] = _jsonb[name]
        condition = extracted.in_([type_coerce(w, JSONB) for w in wanted])
    else:
        extracted = func.json_extract(_values, f"$.{name}")
        condition = extracted.in_(list(wanted))
    query = (
        select(results.c.id, extracted.label("key"))
        .where(results.c.set_id == set_id, condition)
        .order_by(results.c.id)
    )
    return [(int(r.id), r.key) for r in tx.execute(query)]


# --- batches (storeResults): one statement for many rows -----------------------------------------

_batch_statements: dict[str, tuple[Any, Any]] = {}


def _batch_statements_for(tx: Tx) -> tuple[Any, Any]:
    """(insert many, update many) with values as JSON text serialised once (store/jsontext.py)."""
    name = tx.dialect.name
    if name not in _batch_statements:
        insert_many = (
            insert(results)
            .values(values=jsontext.param(tx, "j_values"))
            .returning(results.c.id, sort_by_parameter_order=True)
        )
        update_many = (
            update(results)
            .where(results.c.id == bindparam("b_id"), results.c.version == bindparam("b_version"))
            .values(
                date=bindparam("b_date"),
                values=jsontext.param(tx, "j_values"),
                version=bindparam("b_version") + 1,
                updated_at=bindparam("b_now"),
                updated_by=bindparam("b_actor"),
            )
        )
        _batch_statements[name] = (insert_many, update_many)
    return _batch_statements[name]


@dataclass(frozen=True, slots=True)
class NewResult:
    set_id: int
    date: datetime
    values: Mapping[str, Any]
    actor: str
    now: datetime


@dataclass(frozen=True, slots=True)
class ResultChange:
    result_id: int
    from_version: int
    date: datetime
    values: Mapping[str, Any]
    actor: str
    now: datetime


_SQLITE_COLUMNS = (
    "id",
    "set_id",
    "date",
    "values",
    "version",
    "created_at",
    "updated_at",
    "created_by",
    "updated_by",
)
_SQLITE_INSERT = bulk.insert_sql(results, _SQLITE_COLUMNS)


def insert_results(tx: Tx, rows: Sequence[NewResult]) -> list[int]:
    """Insert many results at version 1; their ids in the order given."""
    if not rows:
        return []
    dumps = jsontext.dumps
    if tx.dialect.name == "sqlite":
        ids = bulk.next_ids(tx, results, len(rows))
        to_time = bulk.sqlite_time(tx, results.c.created_at)
        params = []
        for i, r in zip(ids, rows, strict=True):
            now = to_time(r.now)
            date = now if r.date is r.now else to_time(r.date)
            params.append((i, r.set_id, date, dumps(_clean(r.values)), 1, now, now, r.actor, r.actor))
        tx.exec_driver_sql(_SQLITE_INSERT, params)
        return ids
    params_pg = [
        {
            "set_id": r.set_id,
            "date": r.date,
            "j_values": dumps(_clean(r.values)),
            "version": 1,
            "created_at": r.now,
            "updated_at": r.now,
            "created_by": r.actor,
            "updated_by": r.actor,
        }
        for r in rows
    ]
    return [int(row.id) for row in tx.execute(_batch_statements_for(tx)[0], params_pg)]


def update_results(tx: Tx, changes: Sequence[ResultChange]) -> None:
    """Apply many version bumps in the order given (one result may appear more than once)."""
    if not changes:
        return
    tx.execute(
        _batch_statements_for(tx)[1],
        [
            {
                "b_id": c.result_id,
                "b_version": c.from_version,
                "b_date": c.date,
                "j_values": jsontext.dumps(_clean(c.values)),
                "b_now": c.now,
                "b_actor": c.actor,
            }
            for c in changes
        ],
    )


def get_results(
    tx: Tx, set_id: int, result_ids: Sequence[int], *, for_update: bool = False
) -> dict[int, ResultRecord]:
    """The set's results with these ids (missing ones are absent), rows locked on PostgreSQL."""
    if not result_ids:
        return {}
    query = select(results).where(results.c.set_id == set_id, results.c.id.in_(sorted(set(result_ids))))
    if for_update and tx.dialect.name == "postgresql":
        query = query.order_by(results.c.id).with_for_update()
    return {int(r.id): _result(r) for r in tx.execute(query)}
