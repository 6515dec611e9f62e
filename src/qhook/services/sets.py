"""Sets and their field definitions: create, read, change (never dropping data), delete."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.domain.fields import (
    SET_KINDS,
    FieldDef,
    OptionDef,
    new_field_defs,
    patched_field_defs,
    with_options,
)
from qhook.errors import Conflict, NotFound, field_error
from qhook.services import audit, auth_profiles
from qhook.store import sets as store
from qhook.store import users as user_store
from qhook.store import workflows as workflow_store
from qhook.store.db import Database, Tx
from qhook.store.sets import SetRecord


def _name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 200:
        raise field_error("name", "a non-empty set name of at most 200 characters")
    return name.strip()


def _kind(kind: object) -> str:
    if kind not in SET_KINDS:
        raise field_error("kind", f"one of {', '.join(SET_KINDS)}")
    return str(kind)


def _describe(fields: Sequence[FieldDef]) -> list[dict[str, object]]:
    return [{"name": f.name, "type": f.type, "active": f.active} for f in fields]


def create_set(
    db: Database, *, name: str, kind: str = "analysis_set", fields: object = None, actor: str
) -> SetRecord:
    """Validate and store a new set; list options get ids 1..n."""
    clean_name, clean_kind = _name(name), _kind(kind)
    defs = new_field_defs(fields if fields is not None else [])
    with db.transaction() as tx:
        set_id = store.insert_set(tx, name=clean_name, kind=clean_kind, now=utcnow())
        for field in defs:
            store.insert_field(tx, set_id, field)
        audit.record(
            tx,
            actor,
            "set.create",
            "set",
            set_id,
            {"name": clean_name, "kind": clean_kind, "fields": _describe(defs)},
        )
        created = store.get_set(tx, set_id)
    assert created is not None
    return created


def get_set_tx(tx: Tx, set_id: int) -> SetRecord:
    found = store.get_set(tx, set_id)
    if found is None:
        raise NotFound(f"set {set_id}: no such set")
    return found


def get_set(db: Database, set_id: int) -> SetRecord:
    """The set with its fields (all of them, active or not, by position); NotFound otherwise."""
    with db.reading() as tx:
        return get_set_tx(tx, set_id)


def list_sets(db: Database, set_ids: Sequence[int] | None = None) -> list[SetRecord]:
    """Every set, or only those in ``set_ids`` (a principal limited to some sets)."""
    with db.reading() as tx:
        return store.list_sets(tx, set_ids)


def update_set(
    ctx: AppContext, set_id: int, *, name: str | None = None, fields: object = None, actor: str
) -> SetRecord:
    """Rename; add fields; relabel, (de)activate or re-require fields; add, relabel or (de)activate options.

    Fields are matched by name; nothing unmentioned changes and nothing is dropped. A type change: 409.
    A field (de)activated brings the on_date schedules of the workflows naming it up to date.
    """
    from qhook.services import workflows  # workflows read sets: import at call time

    clean_name = _name(name) if name is not None else None
    with ctx.db.transaction() as tx:
        store.lock_set(tx, set_id)
        current = get_set_tx(tx, set_id)
        changed: list[FieldDef] = []
        if fields is not None:
            patched = patched_field_defs(current.fields, fields)
            for field in patched:
                if field.id == 0:
                    store.insert_field(tx, set_id, field)
                    changed.append(field)
                elif field not in current.fields:
                    store.update_field(tx, field)
                    changed.append(field)
        store.update_set(tx, set_id, now=utcnow(), name=clean_name)
        audit.record(
            tx, actor, "set.update", "set", set_id, {"name": clean_name, "fields": _describe(changed)}
        )
        updated = get_set_tx(tx, set_id)
        was = {f.id: f.active for f in current.fields}
        toggled = {f.name for f in changed if f.id in was and was[f.id] != f.active}
        if toggled:
            workflows.refit_schedules(tx, ctx, updated, toggled)
        return updated


def delete_set(ctx: AppContext, set_id: int, *, force: bool = False, actor: str) -> None:
    """Delete a set; refused while it has results unless ``force``.

    With ``force`` every result is deleted as one by one would be, in the same transaction: a
    ``deleted`` event each, and the fan-out, so deletion workflows fire (e-mails and chained
    changes to other sets). Refused while an active workflow of the set would send webhooks on
    deletion: its signals go with the set, so those deliveries could never be sent.
    """
    from qhook.services import results  # results builds on sets: import at call time

    with results.writing(ctx) as tx:
        store.lock_set(tx, set_id)
        current = get_set_tx(tx, set_id)
        count = store.count_results(tx, set_id)
        if count and not force:
            raise Conflict(
                f"set {set_id} has {count} result(s); delete them first or pass force=true to delete them too"
            )
        if count:
            _refuse_unsendable_deletions(tx, set_id)
        for result_id in store.result_ids(tx, set_id):
            results.delete_result_tx(tx, ctx, set_id=set_id, result_id=result_id, actor=actor)
        store.delete_set(tx, set_id)
        unrestricted = user_store.forget_set(tx, set_id)
        profiles = auth_profiles.forget_set_tx(tx, set_id)
        audit.record(
            tx,
            actor,
            "set.delete",
            "set",
            set_id,
            {
                "name": current.name,
                "results_deleted": count,
                "removed_from_users": unrestricted,
                "removed_from_auth_profiles": profiles,
            },
        )


def _refuse_unsendable_deletions(tx: Tx, set_id: int) -> None:
    senders = [
        w.name
        for w in workflow_store.list_workflows(tx, set_id=set_id, active_only=True)
        if w.triggers.get("deletion") and any(sig.type == "webhook" for sig in w.active_signals)
    ]
    if senders:
        names = ", ".join(repr(name) for name in senders)
        raise Conflict(
            f"set {set_id} has active workflows that send webhooks when a result is deleted ({names}); "
            "their deliveries could not be sent once the set is gone. Deactivate or delete them first, "
            "then delete the set"
        )


def add_options_tx(tx: Tx, current: SetRecord, new_options: dict[str, tuple[OptionDef, ...]]) -> SetRecord:
    """Store list options added on the fly (``add_list_options``); returns the set as it is now."""
    if not new_options:
        return current
    updated = with_options(current.fields, new_options)
    for field in updated:
        if field.name in new_options:
            store.update_field(tx, field)
    return replace(current, fields=updated)
