"""Many result changes of one set in one transaction with a handful of statements (storeResults).

The answer is the same as calling ``create_result_tx`` / ``update_result_tx`` / ``upsert_by_key_tx``
once per input, in input order: same validation, same versions, same events (in input order),
same evaluations and deliveries. It is only used when no workflow of the set has a chained signal
(``fanout.can_batch``): then nothing else writes results while the batch is decided, so the
changes can be worked out in memory first and written with one executemany per table.

Measured on SQLite (bench/ingest_profile.py): per-result statements were most of the time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.domain.fields import (
    Coerced,
    FlatView,
    ValueCoercer,
    changes_between,
    check_required,
    kept_as_stored,
    merge_values,
    same_values,
)
from qhook.domain.id_batch import UidSource
from qhook.errors import NotFound, QhookError
from qhook.services import fanout
from qhook.services.results import (
    DateInput,
    KeyIndex,
    _result_date,
    _set_for_write,
    _with_new_options,
    find_by_key_tx,
)
from qhook.store import results as store
from qhook.store.db import Tx
from qhook.store.events import EventRecord
from qhook.store.results import NewResult, ResultChange, ResultRecord
from qhook.store.sets import SetRecord


@dataclass(frozen=True, slots=True)
class BatchOp:
    """One input: update ``result_id``, or upsert by ``key_field``, or create."""

    values: Mapping[str, object]
    date: DateInput = None
    result_id: int | None = None
    key_field: str | None = None
    edit_only: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    result_id: int
    created: bool


@dataclass(frozen=True, slots=True)
class _Write:
    action: str  # new modified
    ref: int  # a real id, or a negative placeholder for a result created in this batch
    before: ResultRecord | None
    after: ResultRecord
    current: SetRecord  # the set as it was for this change (list options may grow on the way)
    now: datetime


class _Batch:
    def __init__(self, tx: Tx, set_id: int, actor: str, add_list_options: bool) -> None:
        self.tx = tx
        self.set_id = set_id
        self.actor = actor
        self.add_list_options = add_list_options
        self.state: dict[int, ResultRecord] = {}
        self.writes: list[_Write] = []
        self.next_temp = -1
        self._coercer: tuple[SetRecord, ValueCoercer] | None = None

    def coerce(self, current: SetRecord, values: Mapping[str, object]) -> Coerced:
        """``coerce_values`` against the set as it is now (list options may have been added)."""
        if self._coercer is None or self._coercer[0] is not current:
            self._coercer = (current, ValueCoercer(current.fields))
        return self._coercer[1].coerce(values, add_options=self.add_list_options)

    def create(
        self, current: SetRecord, values: Mapping[str, object], date: DateInput
    ) -> tuple[int, SetRecord]:
        now = utcnow()
        coerced = self.coerce(current, values)
        current = _with_new_options(self.tx, current, coerced.new_options)
        stored = merge_values({}, coerced.values)
        check_required(current.fields, stored)
        ref, self.next_temp = self.next_temp, self.next_temp - 1
        record = ResultRecord(
            ref, self.set_id, _result_date(date, now), stored, 1, now, now, self.actor, self.actor
        )
        self.state[ref] = record
        self.writes.append(_Write("new", ref, None, record, current, now))
        return ref, current

    def update(
        self, current: SetRecord, ref: int, values: Mapping[str, object], date: DateInput
    ) -> SetRecord:
        now = utcnow()
        result = self.state.get(ref)
        if result is None:
            raise NotFound(f"result {ref}: no such result in set {self.set_id}")
        coerced = self.coerce(current, kept_as_stored(current.fields, values, result.values))
        current = _with_new_options(self.tx, current, coerced.new_options)
        merged = merge_values(result.values, coerced.values)
        new_date = result.date if date is None or date == "" else _result_date(date, now)
        if same_values(result.values, merged) and new_date == result.date:
            return current  # nothing changed: no version, no event (as update_result_tx)
        touched = set(coerced.values)
        check_required([f for f in current.fields if f.name in touched], merged)
        updated = replace(
            result,
            date=new_date,
            values=merged,
            version=result.version + 1,
            updated_at=now,
            updated_by=self.actor,
        )
        self.state[ref] = updated
        self.writes.append(_Write("modified", ref, result, updated, current, now))
        return current


def write_many_tx(
    tx: Tx,
    ctx: AppContext,
    *,
    set_id: int,
    ops: Sequence[BatchOp | QhookError],
    actor: str,
    add_list_options: bool = False,
) -> list[Outcome | QhookError]:
    """Apply ``ops`` in order; per op its outcome or the error that refused it (an input that was
    already refused comes in as its error). Nothing is written unless every op succeeded."""
    current = _set_for_write(tx, set_id, add_list_options)
    if not fanout.can_batch(tx, set_id):
        raise RuntimeError(f"set {set_id} has chained signals: write its results one by one")
    batch = _Batch(tx, set_id, actor, add_list_options)
    key_fields = {op.key_field for op in ops if isinstance(op, BatchOp) and op.key_field}
    indexes = {
        name: KeyIndex(tx, current, name, [op.values.get(name) for op in ops if isinstance(op, BatchOp)])
        for name in key_fields
    }
    wanted_ids = [op.result_id for op in ops if isinstance(op, BatchOp) and op.result_id is not None]
    for index in indexes.values():
        wanted_ids.extend(index.known_ids())
    batch.state.update(store.get_results(tx, set_id, wanted_ids, for_update=True))
    outcomes: list[Outcome | QhookError] = []
    for op in ops:
        if isinstance(op, QhookError):
            outcomes.append(op)
            continue
        try:
            if op.result_id is not None:
                current = batch.update(current, op.result_id, op.values, op.date)
                outcomes.append(Outcome(op.result_id, False))
            elif op.key_field is not None:
                ref, created, current = _upsert(batch, current, indexes[op.key_field], op)
                outcomes.append(Outcome(ref, created))
            else:
                ref, current = batch.create(current, op.values, op.date)
                outcomes.append(Outcome(ref, True))
        except QhookError as exc:
            if exc.status >= 500:
                raise
            outcomes.append(exc)
    if any(isinstance(o, QhookError) for o in outcomes):
        return outcomes  # the caller refuses the whole call; nothing was written
    real = _write_results(tx, batch)
    _write_events(tx, ctx, batch, real)
    return [
        Outcome(real.get(o.result_id, o.result_id), o.created) if isinstance(o, Outcome) else o
        for o in outcomes
    ]


def _upsert(batch: _Batch, current: SetRecord, index: KeyIndex, op: BatchOp) -> tuple[int, bool, SetRecord]:
    key_field = op.key_field
    assert key_field is not None
    raw = op.values.get(key_field)
    answered, ref = index.lookup(batch.tx, current, raw)
    if not answered:
        found = find_by_key_tx(batch.tx, current, key_field, raw)  # raises for a bad key
        ref = found.id if found else None
        if found is not None and found.id not in batch.state:
            batch.state[found.id] = found
    if ref is None:
        if op.edit_only:
            raise NotFound(f"{key_field}: no result with {key_field} = {raw!r} (editOnly)")
        ref, current = batch.create(current, op.values, op.date)
        index.created(current, raw, ref)
        return ref, True, current
    return ref, False, batch.update(current, ref, op.values, op.date)


def _write_results(tx: Tx, batch: _Batch) -> dict[int, int]:
    """Insert the new results, then apply the changes in order; placeholder -> real id."""
    new = [w for w in batch.writes if w.action == "new"]
    ids = store.insert_results(
        tx, [NewResult(batch.set_id, w.after.date, w.after.values, batch.actor, w.now) for w in new]
    )
    real = {w.ref: i for w, i in zip(new, ids, strict=True)}
    store.update_results(
        tx,
        [
            ResultChange(
                real.get(w.ref, w.ref), w.after.version - 1, w.after.date, w.after.values, batch.actor, w.now
            )
            for w in batch.writes
            if w.action == "modified"
        ],
    )
    return real


def _write_events(tx: Tx, ctx: AppContext, batch: _Batch, real: Mapping[int, int]) -> None:
    events: list[EventRecord] = []
    views: dict[int, FlatView] = {}  # by id(set record): the fields change when options are added
    uids = UidSource(len(batch.writes))
    for w in batch.writes:
        result_id = real.get(w.ref, w.ref)
        view = views.get(id(w.current))
        if view is None:
            view = views[id(w.current)] = FlatView(w.current.fields)
        before = None if w.before is None else view.flat(result_id, w.before.date, w.before.values)
        after = view.flat(result_id, w.after.date, w.after.values)
        events.append(
            EventRecord(
                id=0,
                uid=uids.new_uid("evt", w.now),
                set_id=batch.set_id,
                result_id=result_id,
                action=w.action,
                actor=batch.actor,
                occurred_at=w.now,
                before=before,
                after=after,
                changes=changes_between(before, after),
                evaluations=[],
                chain=None,
                result_version=w.after.version,
            )
        )
    fanout.fan_out_many(tx, ctx, events)
