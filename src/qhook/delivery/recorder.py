"""Batches finished attempts into few transactions: the worker's hot path to the database.

Outcomes wait a few milliseconds so that many share one transaction (one insert of their attempts
and one update of their deliveries, many rows per statement: ``queue.record_outcomes``); rare side
effects (pauses, circuits, error reports, released leases) ride along in the same transaction, in
order. While outcomes keep coming (a busy worker) they wait longer, up to ``GATHER_MAX_S``: a
transaction costs the same few round trips whatever it holds, and at the 5 ms of a quiet worker
a busy one wrote ~30 outcomes at a time and the machine spent 15-32 % more CPU per delivery, its
database's included (bench/throughput, PostgreSQL).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from qhook import outage
from qhook.clock import utcnow
from qhook.errors import QhookError
from qhook.store import queue
from qhook.store.db import Database, Tx

logger = logging.getLogger(__name__)

Op = Callable[[Tx, datetime], object]
RunInThread = Callable[..., Awaitable[object]]
GATHER_S = 0.005  # an outcome waits this long for others to share its transaction, and again
GATHER_MAX_S = 0.05  # while more came meanwhile, up to this long after the first of them
STOP_GRACE_S = 10.0  # how long a stopping worker keeps trying to record while the database is away
RETRY_MAX_S = 5.0  # the longest pause between tries while the database is away


@dataclass
class _Pending:
    attempts: list[queue.AttemptRow] = field(default_factory=list)
    finishes: list[queue.Finish] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    done_ids: list[int] = field(default_factory=list)
    since: float = 0.0  # monotonic time the first of them came
    urgent: bool = False  # something must not wait for company (see ``Recorder.add``)

    def __bool__(self) -> bool:
        return bool(self.attempts or self.finishes or self.ops or self.done_ids)


class Recorder:
    """Collects outcomes on the loop; one task writes them in batches from a thread."""

    def __init__(
        self,
        db: Database,
        run_in_thread: RunInThread,
        on_written: Callable[[list[int]], None],
        *,
        batch_size: int,
        owner: str | None = None,
    ) -> None:
        self._db = db
        self._owner = owner  # the worker whose leases fence its outcomes (queue.record_outcomes)
        self._run = run_in_thread
        self._on_written = on_written
        self._batch_size = batch_size
        self._pending = _Pending()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._added = 0  # outcomes and side effects queued so far: did more come while gathering
        self._outage_tries = 0  # failed tries in a row: the database is away
        self._give_up_at: float | None = None  # stopping during an outage: one grace for all batches
        self._idle.set()

    def add(
        self,
        attempt: queue.AttemptRow | None,
        finish: queue.Finish | None,
        ops: list[Op] | None = None,
        done_ids: list[int] | None = None,
        *,
        urgent: bool = False,
    ) -> None:
        """Queue one outcome (and its side effects); ``done_ids`` leave the worker's hands once written.

        ``urgent`` (an ordered delivery's last outcome: the next event of its result waits for it)
        and side effects (a circuit, a pause, a rate slot given back) are written after the short
        gather, never kept waiting while other outcomes keep coming.
        """
        if not self._pending:
            self._pending.since = time.monotonic()
        self._pending.urgent = self._pending.urgent or urgent or bool(ops)
        self._added += 1
        if attempt is not None:
            self._pending.attempts.append(attempt)
        if finish is not None:
            self._pending.finishes.append(finish)
            self._pending.done_ids.append(finish.delivery_id)
        self._pending.ops.extend(ops or [])
        self._pending.done_ids.extend(done_ids or [])
        self._idle.clear()
        self._ready.set()

    @property
    def stalled(self) -> bool:
        """The database refused the last try: outcomes wait to be written."""
        return self._outage_tries > 0

    def op(self, op: Op, done_ids: list[int] | None = None) -> None:
        self.add(None, None, [op], done_ids)

    async def run(self, stop: asyncio.Event) -> None:
        """Write batches until ``stop`` and nothing is left."""
        # ``stop`` sets ``_ready`` too: the wait below is one event awaited directly (a task per
        # event plus ``asyncio.wait`` on every batch cost the loop more than the batch at low rates).
        stop_watch = asyncio.ensure_future(stop.wait())
        stop_watch.add_done_callback(lambda _: self._ready.set())
        try:
            await self._write_until(stop)
        finally:
            stop_watch.cancel()

    async def _write_until(self, stop: asyncio.Event) -> None:
        while True:
            if not self._pending:
                self._idle.set()
                if stop.is_set():
                    return
                await self._ready.wait()
                self._ready.clear()
                continue
            await self._gather(stop)
            batch, self._pending = self._pending, _Pending()
            self._ready.clear()
            while True:
                try:
                    await self._run(self._write, batch)
                    if self._outage_tries:
                        logger.info(
                            "recording outcomes again after %d failed tries",
                            self._outage_tries,
                            extra={"action": "record_back", "tries": self._outage_tries},
                        )
                    self._outage_tries = 0
                    break
                except QhookError as exc:  # database unavailable: keep the batch, try again
                    self._outage_tries += 1
                    if outage.worth_saying(self._outage_tries):
                        logger.warning(
                            "recording outcomes failed: %s; trying again",
                            exc.for_operators,
                            extra={"action": "record_retry", "tries": self._outage_tries},
                        )
                    if stop.is_set() and self._gave_up(batch):
                        break
                    await asyncio.sleep(min(0.5 * self._outage_tries, RETRY_MAX_S))
                except Exception:
                    # Not an outage: something in the batch the database refuses. Retrying it whole
                    # would loop, and dropping it whole would send all of it again when its leases
                    # run out; written one by one, only what is refused waits for its lease.
                    logger.exception("recording outcomes failed", extra={"action": "record_failed"})
                    await self._run(self._write_apart, batch)
                    break
            self._on_written(batch.done_ids)

    async def _gather(self, stop: asyncio.Event) -> None:
        """Let outcomes that arrive meanwhile share the next transaction (``keep_gathering``)."""
        while not stop.is_set() and len(self._pending.finishes) < self._batch_size:
            added = self._added
            await asyncio.sleep(GATHER_S)
            if not keep_gathering(
                more_came=self._added != added,
                urgent=self._pending.urgent,
                full=len(self._pending.finishes) >= self._batch_size,
                waited_s=time.monotonic() - self._pending.since,
            ):
                return

    def _gave_up(self, batch: _Pending) -> bool:
        """Stopping while the database is away: it waited for the database for ever, so the
        process did not end. After one grace for the whole stop (each batch waited a grace of its
        own), what is left goes unrecorded; its deliveries are sent again when the leases run out."""
        now = asyncio.get_running_loop().time()
        if self._give_up_at is None:
            self._give_up_at = now + STOP_GRACE_S
        if now < self._give_up_at:
            return False
        outcomes, others = len(batch.finishes), len(batch.ops)
        logger.error(
            "stopping without recording %d outcome(s) and %d other change(s): their deliveries are "
            "sent again when the leases run out",
            outcomes,
            others,
            extra={"action": "record_abandoned", "count": outcomes, "others": others},
        )
        return True

    async def drained(self) -> None:
        await self._idle.wait()

    def _write(self, batch: _Pending) -> None:
        now = utcnow()
        with self._db.transaction() as tx:
            lost = queue.record_outcomes(tx, batch.attempts, batch.finishes, now=now, owner=self._owner)
            for op in batch.ops:
                op(tx, now)
        _say_lost(lost)

    def _write_apart(self, batch: _Pending) -> None:
        """Each delivery's outcomes and each side effect in a transaction of its own. Outcomes the
        database refuses are written again without the receiver's answer (the likely cause), so
        the delivery is not sent again when its lease runs out; what is still refused is logged."""
        by_delivery: dict[int, _Pending] = {}
        for a in batch.attempts:
            by_delivery.setdefault(a.delivery_id, _Pending()).attempts.append(a)
        for f in batch.finishes:
            by_delivery.setdefault(f.delivery_id, _Pending()).finishes.append(f)
        for part in by_delivery.values():
            outcomes = functools.partial(
                _outcomes, attempts=part.attempts, finishes=part.finishes, owner=self._owner
            )
            try:
                self._apply(outcomes)
            except QhookError as exc:  # the database went away meanwhile: the lease runs out
                logger.warning(
                    "recording an outcome failed: %s", exc.for_operators, extra={"action": "record_failed"}
                )
            except Exception as exc:
                reason = type(exc).__name__
                logger.warning(
                    "an outcome was refused; recording it without the receiver's answer",
                    extra={"action": "record_stripped", "reason": reason},
                )
                stripped = functools.partial(
                    _outcomes,
                    attempts=[_stripped_attempt(a, reason) for a in part.attempts],
                    finishes=[dataclasses.replace(f, hint=_stripped_hint(reason)) for f in part.finishes],
                    owner=self._owner,
                )
                self._try(stripped)
        for op in batch.ops:
            self._try(op)

    def _apply(self, part: Op) -> None:
        with self._db.transaction() as tx:
            part(tx, utcnow())

    def _try(self, part: Op) -> None:
        try:
            self._apply(part)
        except QhookError as exc:
            logger.warning(
                "recording an outcome failed: %s", exc.for_operators, extra={"action": "record_failed"}
            )
        except Exception:
            logger.exception("recording an outcome failed", extra={"action": "record_failed"})


def keep_gathering(*, more_came: bool, urgent: bool, full: bool, waited_s: float) -> bool:
    """After a gather step of ``GATHER_S``: wait one more? Only while outcomes keep coming, none
    is urgent, the batch has room, and the first of them has waited less than ``GATHER_MAX_S``."""
    return more_came and not urgent and not full and waited_s + GATHER_S <= GATHER_MAX_S


def _stripped_hint(reason: str) -> str:
    return f"qhook could not store the receiver's answer to this attempt ({reason}); the status is kept."


def _stripped_attempt(a: queue.AttemptRow, reason: str) -> queue.AttemptRow:
    """The attempt with no text from outside: the receiver's headers and body, the error message."""
    return dataclasses.replace(
        a,
        request_headers={},
        response_headers=None,
        response_body=None,
        error=None,
        hint=_stripped_hint(reason),
    )


def _outcomes(
    tx: Tx,
    now: datetime,
    *,
    attempts: list[queue.AttemptRow],
    finishes: list[queue.Finish],
    owner: str | None,
) -> None:
    _say_lost(queue.record_outcomes(tx, attempts, finishes, now=now, owner=owner))


def _say_lost(lost: set[int]) -> None:
    if lost:
        logger.warning(
            "%d outcome(s) not written: another worker had taken the deliveries over after this "
            "worker's lease ran out (their attempts are logged)",
            len(lost),
            extra={"action": "record_lease_lost", "count": len(lost), "delivery_ids": sorted(lost)[:20]},
        )
