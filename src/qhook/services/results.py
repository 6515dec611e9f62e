"""Results: every create, change and delete writes its event and runs the fan-out, in one transaction.

The ``*_tx`` functions work inside a caller's transaction (the API wrappers below, the compat API,
chained signals); the wrappers open the transaction and wake the delivery worker after commit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.domain.fields import (
    StoredValue,
    changes_between,
    check_required,
    coerce_filter,
    coerce_values,
    field_by_name,
    flat_result,
    kept_as_stored,
    merge_values,
    parse_datetime,
    same_values,
)
from qhook.domain.ids import new_uid
from qhook.errors import NotFound, PreconditionFailed, QhookError, field_error
from qhook.services import fanout
from qhook.services import sets as set_service
from qhook.store import events as event_store
from qhook.store import results as store
from qhook.store import sets as set_store
from qhook.store import txcache
from qhook.store.db import Database, Tx
from qhook.store.events import EventRecord
from qhook.store.results import ResultRecord
from qhook.store.sets import SetRecord

DateInput = datetime | str | None
CHAIN_WRITES = "chain_writes"


def _result_date(raw: DateInput, now: datetime) -> datetime:
    if raw is None or raw == "":
        return now.replace(microsecond=0)
    try:
        return parse_datetime(raw)
    except ValueError as exc:
        raise field_error("date", "a date and time such as 2025-10-02T13:37:00Z") from exc


def current_set_tx(tx: Tx, set_id: int) -> SetRecord:
    """The set, read once per transaction (fan-out reads the same memo)."""
    found = fanout.current_set(tx, set_id)
    if found is None:
        raise NotFound(f"set {set_id}: no such set")
    return found


def _set_for_write(tx: Tx, set_id: int, add_list_options: bool) -> SetRecord:
    if add_list_options:
        # Two writers adding the same new label must not both give it a fresh option id.
        set_store.lock_set(tx, set_id)
    return current_set_tx(tx, set_id)


def _with_new_options(tx: Tx, current: SetRecord, new_options: Mapping[str, Any]) -> SetRecord:
    if not new_options:
        return current
    updated = set_service.add_options_tx(tx, current, dict(new_options))
    fanout.remember_set(tx, updated)
    return updated


def _count_chained_write(tx: Tx, chain: Mapping[str, Any] | None) -> None:
    # A KeyIndex built before this transaction's chained writes can no longer be trusted.
    if chain is not None:
        memo = txcache.memo(tx)
        memo[CHAIN_WRITES] = memo.get(CHAIN_WRITES, 0) + 1


def _flat(result: ResultRecord, current: SetRecord) -> dict[str, Any]:
    return flat_result(result.id, result.date, result.values, current.fields)


# A deletion drops every schedule of its result, which only the one-event path does.
BATCHED_ACTIONS = frozenset({"new", "modified"})


def _record_event(
    tx: Tx,
    ctx: AppContext,
    *,
    set_id: int,
    result_id: int,
    action: str,
    actor: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    chain: Mapping[str, Any] | None,
    now: datetime,
    result_version: int,
) -> EventRecord:
    """Write the event, let the workflows decide about it, keep their evaluations on it."""
    record = event_store.new_event(
        uid=new_uid("evt", now),
        set_id=set_id,
        result_id=result_id,
        action=action,
        actor=actor,
        occurred_at=now,
        before=before,
        after=after,
        changes=changes_between(before, after),
        chain=chain,
        result_version=result_version,
    )
    if chain is None and action in BATCHED_ACTIONS and fanout.can_batch(tx, set_id):
        # No signal of the set writes results in turn (the usual case): the workflows decide
        # first and the event goes in with its evaluations, as storeResults does it, instead of
        # an UPDATE of the event after its deliveries (one statement fewer per change).
        (event_id,) = fanout.fan_out_many(tx, ctx, [record])
        return replace(record, id=event_id)
    event = event_store.insert_record(tx, record)
    evaluations = fanout.after_event(tx, ctx, event)
    if evaluations:
        event_store.set_evaluations(tx, event.id, evaluations)
    return event


def _existing(tx: Tx, set_id: int, result_id: int) -> ResultRecord:
    found = store.get_result(tx, set_id, result_id, for_update=True)
    if found is None:
        raise NotFound(f"result {result_id}: no such result in set {set_id}")
    return found


def _check_version(result: ResultRecord, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != result.version:
        raise PreconditionFailed(
            f"result {result.id} is at version {result.version}, not {expected_version}: "
            "it changed since you read it; read it again and retry"
        )


def create_result_tx(
    tx: Tx,
    ctx: AppContext,
    *,
    set_id: int,
    values: Mapping[str, object],
    date: DateInput = None,
    actor: str,
    chain: Mapping[str, Any] | None = None,
    add_list_options: bool = False,
) -> ResultRecord:
    """Validate ``values`` (field name -> raw value), store a new result at version 1, write its event."""
    now = utcnow()
    current = _set_for_write(tx, set_id, add_list_options)
    coerced = coerce_values(current.fields, values, add_options=add_list_options)
    current = _with_new_options(tx, current, coerced.new_options)
    stored = merge_values({}, coerced.values)
    check_required(current.fields, stored)
    result = store.insert_result(
        tx, set_id=set_id, date=_result_date(date, now), values=stored, actor=actor, now=now
    )
    _count_chained_write(tx, chain)
    _record_event(
        tx,
        ctx,
        set_id=set_id,
        result_id=result.id,
        action="new",
        actor=actor,
        before=None,
        after=_flat(result, current),
        chain=chain,
        now=now,
        result_version=result.version,
    )
    return result


def update_result_tx(
    tx: Tx,
    ctx: AppContext,
    *,
    set_id: int,
    result_id: int,
    values: Mapping[str, object],
    date: DateInput = None,
    actor: str,
    expected_version: int | None = None,
    chain: Mapping[str, Any] | None = None,
    add_list_options: bool = False,
) -> ResultRecord:
    """Merge ``values`` into the result (None clears); bump the version and write an event.

    A change that changes nothing keeps the version and writes no event. ``expected_version``
    (If-Match) refuses with 412 when the result moved on.
    """
    now = utcnow()
    current = _set_for_write(tx, set_id, add_list_options)
    result = _existing(tx, set_id, result_id)
    _check_version(result, expected_version)
    values = kept_as_stored(current.fields, values, result.values)
    coerced = coerce_values(current.fields, values, add_options=add_list_options)
    current = _with_new_options(tx, current, coerced.new_options)
    merged = merge_values(result.values, coerced.values)
    new_date = result.date if date is None or date == "" else _result_date(date, now)
    if same_values(result.values, merged) and new_date == result.date:
        return result
    # Only the fields this change touches must be complete; old gaps (e.g. a field made required
    # later) do not block editing other fields.
    touched = {name for name in coerced.values}
    check_required([f for f in current.fields if f.name in touched], merged)
    updated = store.update_result(
        tx,
        result_id=result.id,
        from_version=result.version,
        date=new_date,
        values=merged,
        actor=actor,
        now=now,
        set_id=set_id,
    )
    if updated is None:  # only possible if the row lock was bypassed; be safe rather than silent
        raise PreconditionFailed(f"result {result_id} changed while it was being updated; retry")
    _count_chained_write(tx, chain)
    _record_event(
        tx,
        ctx,
        set_id=set_id,
        result_id=result.id,
        action="modified",
        actor=actor,
        before=_flat(result, current),
        after=_flat(updated, current),
        chain=chain,
        now=now,
        result_version=updated.version,
    )
    return updated


def delete_result_tx(
    tx: Tx,
    ctx: AppContext,
    *,
    set_id: int,
    result_id: int,
    actor: str,
    chain: Mapping[str, Any] | None = None,
    expected_version: int | None = None,
) -> None:
    """Delete the result and write a "deleted" event holding it as it was."""
    now = utcnow()
    current = current_set_tx(tx, set_id)
    result = _existing(tx, set_id, result_id)
    _check_version(result, expected_version)
    store.delete_result(tx, result.id)
    _count_chained_write(tx, chain)
    _record_event(
        tx,
        ctx,
        set_id=set_id,
        result_id=result.id,
        action="deleted",
        actor=actor,
        before=_flat(result, current),
        after=None,
        chain=chain,
        now=now,
        result_version=result.version + 1,  # after its last: no later body of it is newer
    )


def find_by_key_tx(tx: Tx, current: SetRecord, key_field: str, raw_key: object) -> ResultRecord | None:
    """The result (lowest id) whose ``key_field`` holds ``raw_key``, coerced per the field's type."""
    if field_by_name(current.fields, key_field) is None:
        raise field_error("keyField", f"a field of set {current.id}; {key_field!r} is none")
    wanted = coerce_filter(current.fields, {key_field: raw_key}, path="values")
    if wanted[key_field] == (None,):
        raise field_error(f"values.{key_field}", "a value: it is the key field")
    found = store.list_results(tx, current.id, filters=wanted, limit=1)
    return found[0] if found else None


def _key_norm(value: StoredValue) -> tuple[str, Any]:
    # 3 and 3.0 are the same key (as in the database's comparison); "3" is another one.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return ("n", float(value))
    return ("s", value)


class KeyIndex:
    """A set's results by key field value, loaded with ONE query for all keys of a batch.

    storeResults with keyField looks up a thousand keys per call; asking the database once per key
    scanned the set's JSON values each time. The index answers for the keys it loaded and for the
    results created through it; anything else (bad keys, keys it never saw, or after a chained
    signal wrote to results in this transaction) goes back to ``find_by_key_tx``.
    """

    def __init__(self, tx: Tx, current: SetRecord, key_field: str, raw_keys: Sequence[object]) -> None:
        self.key_field = key_field
        field = field_by_name(current.fields, key_field)
        self.usable = field is not None and field.type != "boolean"
        self._ids: dict[tuple[str, Any], int] = {}
        self._known: set[tuple[str, Any]] = set()
        self._chain_writes = txcache.memo(tx).get(CHAIN_WRITES, 0)
        if not self.usable:
            return
        wanted: dict[tuple[str, Any], StoredValue] = {}
        for raw in raw_keys:
            key = self._stored(current, raw)
            if key is not None:
                wanted[_key_norm(key)] = key
        for result_id, value in store.ids_by_key(tx, current.id, key_field, list(wanted.values())):
            self._ids.setdefault(_key_norm(value), result_id)  # rows come by id: the oldest wins
        self._known.update(wanted)

    def _stored(self, current: SetRecord, raw: object) -> StoredValue | None:
        if raw is None or raw == "" or isinstance(raw, list | dict):
            return None
        try:
            found = coerce_filter(current.fields, {self.key_field: raw}, path="values")[self.key_field]
        except QhookError:
            return None
        if len(found) != 1 or found[0] is None or isinstance(found[0], bool):
            return None
        return found[0]

    def lookup(self, tx: Tx, current: SetRecord, raw: object) -> tuple[bool, int | None]:
        """(answered, result id or None); not answered means: ask the database."""
        if not self.usable or txcache.memo(tx).get(CHAIN_WRITES, 0) != self._chain_writes:
            return False, None
        key = self._stored(current, raw)
        if key is None or _key_norm(key) not in self._known:
            return False, None
        return True, self._ids.get(_key_norm(key))

    def known_ids(self) -> list[int]:
        """Ids of the loaded results (to read them all at once)."""
        return [i for i in self._ids.values() if i > 0]

    def created(self, current: SetRecord, raw: object, result_id: int) -> None:
        key = self._stored(current, raw) if self.usable else None
        if key is not None:
            self._known.add(_key_norm(key))
            self._ids.setdefault(_key_norm(key), result_id)


def upsert_by_key_tx(
    tx: Tx,
    ctx: AppContext,
    *,
    set_id: int,
    key_field: str,
    values: Mapping[str, object],
    actor: str,
    edit_only: bool = False,
    chain: Mapping[str, Any] | None = None,
    add_list_options: bool = False,
    date: DateInput = None,
    keys: KeyIndex | None = None,
) -> tuple[ResultRecord, bool]:
    """Update the result whose ``key_field`` matches ``values[key_field]`` (merge), else create one.

    Returns (result, created). With ``edit_only`` an unmatched key raises NotFound naming the key.
    When several results share the key, the oldest (lowest id) is updated. ``keys``: a KeyIndex
    the caller built for a batch of keys, so the lookup costs no query.
    """
    current = _set_for_write(tx, set_id, add_list_options)
    if key_field not in values:
        raise field_error(f"values.{key_field}", "a value: it is the key field")
    answered, existing_id = keys.lookup(tx, current, values[key_field]) if keys else (False, None)
    if not answered:
        existing = find_by_key_tx(tx, current, key_field, values[key_field])
        existing_id = existing.id if existing else None
    if existing_id is None:
        if edit_only:
            raise NotFound(f"{key_field}: no result with {key_field} = {values[key_field]!r} (editOnly)")
        created = create_result_tx(
            tx,
            ctx,
            set_id=set_id,
            values=values,
            date=date,
            actor=actor,
            chain=chain,
            add_list_options=add_list_options,
        )
        if keys is not None:
            keys.created(current, values[key_field], created.id)
        return created, True
    updated = update_result_tx(
        tx,
        ctx,
        set_id=set_id,
        result_id=existing_id,
        values=values,
        date=date,
        actor=actor,
        chain=chain,
        add_list_options=add_list_options,
    )
    return updated, False


# --- wrappers: one transaction each, then wake the worker --------------------------------------


@contextmanager
def writing(ctx: AppContext) -> Iterator[Tx]:
    """One write transaction for result changes; after its commit the worker in this process is
    woken if the change queued deliveries or e-mails. Other processes' workers hear PostgreSQL's
    NOTIFY, sent by the deliveries' insert itself (a trigger) and delivered at commit."""
    with ctx.db.transaction() as tx:
        yield tx
        queued = bool(txcache.memo(tx).get("deliveries"))
    if queued:
        ctx.wake_here()


def create_result(
    ctx: AppContext,
    *,
    set_id: int,
    values: Mapping[str, object],
    date: DateInput = None,
    actor: str,
    add_list_options: bool = False,
) -> tuple[SetRecord, ResultRecord]:
    """The set as it is after the write (for presenting the result) and the new result."""
    with writing(ctx) as tx:
        result = create_result_tx(
            tx, ctx, set_id=set_id, values=values, date=date, actor=actor, add_list_options=add_list_options
        )
        current = current_set_tx(tx, set_id)  # memoised in this transaction: no second read
    return current, result


def update_result(
    ctx: AppContext,
    *,
    set_id: int,
    result_id: int,
    values: Mapping[str, object],
    date: DateInput = None,
    actor: str,
    expected_version: int | None = None,
    add_list_options: bool = False,
) -> tuple[SetRecord, ResultRecord]:
    """The set as it is after the write (for presenting the result) and the updated result."""
    with writing(ctx) as tx:
        result = update_result_tx(
            tx,
            ctx,
            set_id=set_id,
            result_id=result_id,
            values=values,
            date=date,
            actor=actor,
            expected_version=expected_version,
            add_list_options=add_list_options,
        )
        current = current_set_tx(tx, set_id)
    return current, result


def delete_result(
    ctx: AppContext, *, set_id: int, result_id: int, actor: str, expected_version: int | None = None
) -> None:
    with writing(ctx) as tx:
        delete_result_tx(
            tx, ctx, set_id=set_id, result_id=result_id, actor=actor, expected_version=expected_version
        )


def upsert_by_key(
    ctx: AppContext,
    *,
    set_id: int,
    key_field: str,
    values: Mapping[str, object],
    actor: str,
    edit_only: bool = False,
    add_list_options: bool = False,
) -> tuple[ResultRecord, bool]:
    with writing(ctx) as tx:
        outcome = upsert_by_key_tx(
            tx,
            ctx,
            set_id=set_id,
            key_field=key_field,
            values=values,
            actor=actor,
            edit_only=edit_only,
            add_list_options=add_list_options,
        )
    return outcome


# --- reading -----------------------------------------------------------------------------------


def get_result_tx(tx: Tx, set_id: int, result_id: int) -> ResultRecord:
    found = store.get_result(tx, set_id, result_id)
    if found is None:
        raise NotFound(f"result {result_id}: no such result in set {set_id}")
    return found


def get_result(db: Database, set_id: int, result_id: int) -> tuple[SetRecord, ResultRecord]:
    """The set (for presenting) and the result; NotFound for either."""
    with db.reading() as tx:
        current = set_service.get_set_tx(tx, set_id)
        return current, get_result_tx(tx, set_id, result_id)


def list_results_tx(
    tx: Tx,
    current: SetRecord,
    *,
    filter_values: Mapping[str, object] | None = None,
    after_id: int | None = None,
    limit: int = 100,
    offset: int = 0,
    sort: Sequence[tuple[str, bool]] = (),
) -> list[ResultRecord]:
    """Results of ``current`` matching ``filter_values`` ({field: raw value or [raw values]}).

    Filter values are coerced per field type (list by label or id); an unknown field is a 422
    naming ``filter.<name>``. ``sort`` keys are "id", "date" or field names (checked by the caller).
    """
    wanted: dict[str, tuple[StoredValue, ...]] = (
        coerce_filter(current.fields, filter_values) if filter_values else {}
    )
    return store.list_results(
        tx, current.id, filters=wanted, after_id=after_id, limit=limit, offset=offset, sort=sort
    )


def list_results(
    db: Database,
    set_id: int,
    *,
    filter_values: Mapping[str, object] | None = None,
    after_id: int | None = None,
    limit: int = 100,
    offset: int = 0,
    sort: Sequence[tuple[str, bool]] = (),
) -> tuple[SetRecord, list[ResultRecord]]:
    """The set and one page of its results (see ``list_results_tx``)."""
    with db.reading() as tx:
        current = set_service.get_set_tx(tx, set_id)
        page = list_results_tx(
            tx,
            current,
            filter_values=filter_values,
            after_id=after_id,
            limit=limit,
            offset=offset,
            sort=sort,
        )
        return current, page


def list_events(
    db: Database,
    *,
    result_id: int | None = None,
    set_id: int | None = None,
    set_ids: Sequence[int] | None = None,
    before_id: int | None = None,
    limit: int = 100,
    uid: str | None = None,
) -> list[EventRecord]:
    """Events newest first; ``set_ids`` limits them to the sets a principal may use."""
    with db.reading() as tx:
        return event_store.list_events(
            tx,
            result_id=result_id,
            set_id=set_id,
            set_ids=set_ids,
            before_id=before_id,
            limit=limit,
            uid=uid,
        )
