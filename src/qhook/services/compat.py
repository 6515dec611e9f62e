"""Use cases of the AlisQI-compatible API: list sets, describe a set, read and store results.

Parameters arrive as the original's clients send them (strings); the pure parsing lives in
``qhook.domain.compat``. storeResults writes every result of one call in ONE transaction through
the same ``*_tx`` functions the native API uses, so events, workflows and deliveries follow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qhook.context import AppContext
from qhook.domain import compat
from qhook.domain.access import Principal
from qhook.domain.fields import flat_result
from qhook.domain.ids import MAX_ID
from qhook.errors import BadRequest, Forbidden, QhookError
from qhook.services import fanout, results_batch
from qhook.services import results as results_service
from qhook.services import sets as sets_service
from qhook.store import results as results_store
from qhook.store.db import Tx
from qhook.store.sets import SetRecord

READ_FORBIDDEN = "No read permission for this set"
WRITE_FORBIDDEN = "No write permission for this set"


@dataclass(frozen=True, slots=True)
class StoredResult:
    """One input result of storeResults: the result it became and whether it was new."""

    result_id: int
    created: bool


class StoreResultsFailed(BadRequest):
    """Some results of a storeResults call were bad, so none was stored; ``errors`` says which."""

    def __init__(self, errors: list[dict[str, Any]], total: int) -> None:
        first = "; ".join(f"results[{e['index']}]: {e['error']}" for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        super().__init__(
            f"{len(errors)} of {total} result(s) could not be stored, so none was stored: {first}{more}"
        )
        self.errors = errors


def _readable(principal: Principal, set_id: int) -> None:
    if not principal.can_use_set(set_id):
        raise Forbidden(READ_FORBIDDEN)


def set_summary(found: SetRecord) -> dict[str, Any]:
    return {
        "id": found.id,
        "name": found.name,
        "groupId": found.group_id,
        "groupName": found.group_name,
        "topLevelMenu": found.top_level_menu,
    }


def all_sets(ctx: AppContext, principal: Principal, *, groups: str | None, names: str | None) -> list[Any]:
    """getAllSets: the sets this principal may use, optionally by group (id or name) and set name."""
    wanted_groups = {g.casefold() for g in compat.split_list(groups)}
    wanted_names = {n.casefold() for n in compat.split_list(names)}
    allowed = sorted(principal.set_ids) if principal.set_ids is not None else None
    found = sets_service.list_sets(ctx.db, allowed)
    return [
        set_summary(s)
        for s in found
        if (not wanted_groups or _groups_of(s) & wanted_groups)
        and (not wanted_names or s.name.casefold() in wanted_names)
    ]


SELECTION_LISTS = "selection lists"
"""The group name AlisQI's clients ask for to get every selection list, whatever its own group."""


def _groups_of(found: SetRecord) -> set[str]:
    groups = {str(found.group_id), found.group_name.casefold()}
    if found.kind == "selection_list":
        groups.add(SELECTION_LISTS)
    return groups


def set_definition(
    ctx: AppContext, principal: Principal, set_id: int, *, only_active: bool
) -> dict[str, Any]:
    """getSetDefinition: the set with its fields, types and list options."""
    _readable(principal, set_id)
    found = sets_service.get_set(ctx.db, set_id)
    fields: list[dict[str, Any]] = []
    for field in found.fields:
        if only_active and not field.active:
            continue
        shown: dict[str, Any] = {
            "id": field.id,
            "name": field.name,
            "label": field.label,
            "type": field.type,
            "required": field.required,
            "active": field.active,
            "position": field.position,
        }
        if field.type == "list":
            shown["options"] = [{"id": o.id, "label": o.label, "active": o.active} for o in field.options]
        fields.append(shown)
    return {**set_summary(found), "kind": found.kind, "fields": fields}


@dataclass(frozen=True, slots=True)
class ResultsQuery:
    """getResults parameters that need no set to parse; the rest are parsed against the set."""

    set_id: int
    limit: int = compat.DEFAULT_LIMIT
    offset: int = 0
    sort: str | None = None
    filter: str | None = None
    fields: str | None = None
    include_id: bool = False
    include_last_modification: bool = False


def get_results(ctx: AppContext, principal: Principal, query: ResultsQuery) -> list[dict[str, Any]]:
    """getResults: flat results of a set, filtered, sorted and paged in the database."""
    _readable(principal, query.set_id)
    with ctx.db.reading() as tx:
        found = sets_service.get_set_tx(tx, query.set_id)
        sort = compat.parse_sort(query.sort, found.fields)
        conditions = compat.parse_filter(query.filter, found.fields)
        only_fields = compat.parse_fields(query.fields, found.fields)
        rows = results_store.list_results(
            tx,
            query.set_id,
            filters=compat.as_store_filters(conditions),
            limit=query.limit,
            offset=query.offset,
            sort=compat.as_store_sort(sort),
        )
    return [
        compat.present(
            flat_result(row.id, row.date, row.values, found.fields),
            # fields=@id asks for the id as includeId does (it was accepted and returned no id).
            include_id=query.include_id or "@id" in compat.split_list(query.fields),
            only_fields=only_fields,
            last_modified=row.updated_at if query.include_last_modification else None,
        )
        for row in rows
    ]


def store_results(
    ctx: AppContext,
    principal: Principal,
    set_id: int,
    items: Sequence[Mapping[str, Any]],
    *,
    key_field: str | None = None,
    edit_only: bool = False,
    add_list_options: bool = False,
) -> list[StoredResult]:
    """storeResults: every result in one transaction, all or nothing.

    A result with ``@id`` updates that result; with ``key_field`` a result whose key matches an
    existing one updates it (values merged, null clears), otherwise a new one is created;
    ``edit_only`` creates nothing and reports each result it could not match.
    """
    if not principal.has_role("editor") or not principal.can_use_set(set_id):
        raise Forbidden(WRITE_FORBIDDEN)
    actor = principal.name
    with results_service.writing(ctx) as tx:
        found = results_service.current_set_tx(tx, set_id)
        if key_field is not None and not any(f.name == key_field for f in found.fields):
            raise compat.bad_parameter(f"keyField field '{key_field}'", "No such field in set.")
        if fanout.can_batch(tx, set_id):
            stored = _store_batch(tx, ctx, set_id, items, key_field, edit_only, add_list_options, actor)
        else:
            stored = _store_one_by_one(tx, ctx, set_id, items, key_field, edit_only, add_list_options, actor)
    return stored


def _refuse_if_errors(outcomes: Sequence[StoredResult | QhookError], total: int) -> list[StoredResult]:
    errors: list[dict[str, Any]] = []
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, QhookError):
            if outcome.status >= 500:
                raise outcome
            errors.append({"index": index, "error": _every_problem(outcome)})
    if errors:
        # Every bad result is reported; the transaction is rolled back by the raise.
        raise StoreResultsFailed(errors, total)
    return [o for o in outcomes if isinstance(o, StoredResult)]


def _every_problem(error: QhookError) -> str:
    """All of a result's problems: a ValidationFailed's message names only its first three."""
    details = error.details
    if len(details) <= 3:
        return error.message
    summary = error.message.split(":", 1)[0]
    return f"{summary}: " + "; ".join(f"{d['field']}: {d['error']}" for d in details)


def _store_batch(
    tx: Tx,
    ctx: AppContext,
    set_id: int,
    items: Sequence[Mapping[str, Any]],
    key_field: str | None,
    edit_only: bool,
    add_list_options: bool,
    actor: str,
) -> list[StoredResult]:
    """No chained signals on this set: decide every result in memory, write them all at once."""
    ops: list[results_batch.BatchOp | QhookError] = []
    for item in items:
        try:
            ops.append(batch_op(item, key_field=key_field, edit_only=edit_only))
        except QhookError as exc:
            ops.append(exc)
    outcomes = results_batch.write_many_tx(
        tx, ctx, set_id=set_id, ops=ops, actor=actor, add_list_options=add_list_options
    )
    return _refuse_if_errors(
        [
            StoredResult(o.result_id, o.created) if isinstance(o, results_batch.Outcome) else o
            for o in outcomes
        ],
        len(items),
    )


def _store_one_by_one(
    tx: Tx,
    ctx: AppContext,
    set_id: int,
    items: Sequence[Mapping[str, Any]],
    key_field: str | None,
    edit_only: bool,
    add_list_options: bool,
    actor: str,
) -> list[StoredResult]:
    """Chained signals may write other results between these: each result in turn."""
    current = results_service.current_set_tx(tx, set_id)
    keys = (
        results_service.KeyIndex(tx, current, key_field, [item.get(key_field) for item in items])
        if key_field is not None
        else None
    )
    outcomes: list[StoredResult | QhookError] = []
    for item in items:
        try:
            outcomes.append(
                store_one_tx(
                    tx,
                    ctx,
                    set_id,
                    item,
                    key_field=key_field,
                    edit_only=edit_only,
                    add_list_options=add_list_options,
                    actor=actor,
                    keys=keys,
                )
            )
        except QhookError as exc:
            if exc.status >= 500:
                raise
            outcomes.append(exc)  # keep going to report every bad result
    return _refuse_if_errors(outcomes, len(items))


def batch_op(item: Mapping[str, Any], *, key_field: str | None, edit_only: bool) -> results_batch.BatchOp:
    """One input result as a BatchOp: by ``@id``, by ``key_field``, or new; BadRequest when it can't be."""
    # lastModificationDate is what getResults adds: a row read and written back carries it.
    values = {k: v for k, v in item.items() if k not in ("@id", "date", "lastModificationDate")}
    date = compat.parse_result_date(item["date"]) if item.get("date") else None
    result_id = item.get("@id")
    if result_id is not None and result_id != "":  # an empty column, as "date": "" is
        if (
            isinstance(result_id, bool)
            or not isinstance(result_id, int | str)
            or not (str(result_id).isascii() and str(result_id).isdigit())
            or int(result_id) > MAX_ID
        ):
            raise BadRequest(f"@id: expected a result id, got {result_id!r}")
        return results_batch.BatchOp(values, date, result_id=int(result_id))
    if key_field is not None:
        if values.get(key_field) in (None, ""):
            raise BadRequest(f"{key_field}: the key field needs a value")
        return results_batch.BatchOp(values, date, key_field=key_field, edit_only=edit_only)
    if edit_only:
        raise BadRequest("editOnly: nothing identifies the result to edit; send @id or use keyField")
    return results_batch.BatchOp(values, date)


def store_one_tx(
    tx: Tx,
    ctx: AppContext,
    set_id: int,
    item: Mapping[str, Any],
    *,
    key_field: str | None,
    edit_only: bool,
    add_list_options: bool,
    actor: str,
    keys: results_service.KeyIndex | None = None,
) -> StoredResult:
    """One result inside the caller's transaction: by ``@id``, by ``key_field``, or new."""
    op = batch_op(item, key_field=key_field, edit_only=edit_only)
    if op.result_id is not None:
        updated = results_service.update_result_tx(
            tx,
            ctx,
            set_id=set_id,
            result_id=op.result_id,
            values=op.values,
            date=op.date,
            actor=actor,
            add_list_options=add_list_options,
        )
        return StoredResult(updated.id, False)
    if op.key_field is not None:
        record, created = results_service.upsert_by_key_tx(
            tx,
            ctx,
            set_id=set_id,
            key_field=op.key_field,
            values=op.values,
            date=op.date,
            actor=actor,
            edit_only=op.edit_only,
            add_list_options=add_list_options,
            keys=keys,
        )
        return StoredResult(record.id, created)
    record = results_service.create_result_tx(
        tx, ctx, set_id=set_id, values=op.values, date=op.date, actor=actor, add_list_options=add_list_options
    )
    return StoredResult(record.id, True)
