"""The delivery worker: claim due deliveries, send them per endpoint, record outcomes in batches.

Flow: a claim loop leases batches (first attempts and retries in separate lanes) into per-endpoint
gates; each gate starts sends while it has a free slot, is not paused and its circuit is closed;
a send never waits on another endpoint's slot. Outcomes go to the recorder, which writes many in
one transaction. A maintenance tick syncs endpoint state with the database (other workers'
pauses and circuits), sends circuit probes, marks open circuits' deliveries ``held`` and renews
leases. Database calls run in a small thread pool; the loop never blocks on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import logging
import os
import random
import signal
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any, TypeVar

from qhook import heap, metrics
from qhook import outage as outage_rule
from qhook.clock import utcnow
from qhook.context import AppContext, require_secret_key
from qhook.crypto import SecretBox
from qhook.delivery import attempt as attempt_mod
from qhook.delivery import doorbell, mailer, prepare
from qhook.delivery.endpoints import Gate, Gates
from qhook.delivery.recorder import Op, Recorder
from qhook.domain import circuit, endpoint_limits, restarts
from qhook.domain.rates import Rate
from qhook.errors import QhookError, StoreError
from qhook.store import endpoints as endpoint_store
from qhook.store import error_reports, migrate, queue, rate_slots
from qhook.store.db import Tx

logger = logging.getLogger(__name__)
R = TypeVar("R")
# SQLite plans the claim from sqlite_stat1: without fresh statistics it sorts every waiting row
# (20 ms per claim at 20,000 pending) instead of walking the lane's index (3.6 ms). Taken at the
# first tick and every STATISTICS_EVERY_S, and again whenever the queue outgrew them
# (queue.refresh_statistics): PostgreSQL's are looked at every tick, SQLite's every
# SQLITE_STATISTICS_LOOK_S (a look that misjudged, after deletions, costs one bounded ANALYZE).
STATISTICS_EVERY_S = 600.0
SQLITE_STATISTICS_LOOK_S = 10.0
SHUTDOWN_GRACE_S = 10.0  # in-flight sends may finish; the rest are cancelled and sent again later
# A send starts only while the lease outlasts it (the signal's timeout) by this much, or, with a
# lease shorter than that, while no renewal was missed: a delivery whose lease runs out meanwhile
# (renewals fail while the database is away) can be taken over and sent by another worker.
LEASE_SPARE_S = 5.0
STATUS_OF = {"succeeded": "succeeded", "retry": "retrying", "failed": "failed"}
# Labelled children looked up once: ``labels()`` takes a lock and builds a key on every call.
COUNTED = {status: metrics.DELIVERIES.labels(status) for status in STATUS_OF.values()}


@dataclass(frozen=True, slots=True)
class Item:
    """A leased delivery in this worker's hands, with its signal as read at claim time."""

    delivery: queue.QueuedDelivery
    signal: queue.SendSignal | None
    probe: bool = False

    @property
    def is_retry(self) -> bool:
        return self.delivery.attempt_count > 0


class CachedBox(SecretBox):
    """A SecretBox that remembers recent decryptions (Fernet costs ~70 µs per call)."""

    def __init__(self, box: SecretBox, size: int = 1024) -> None:
        self._box = box
        self._decrypt = functools.lru_cache(maxsize=size)(box.decrypt)

    def encrypt(self, plain: str) -> str:
        return self._box.encrypt(plain)

    def decrypt(self, token: str) -> str:
        return self._decrypt(token)

    def rotate(self, token: str) -> str:
        return self._box.rotate(token)


@dataclass(frozen=True, slots=True)
class Share:
    """Which of the processes of one ``qhook worker --processes N`` a worker is. They split each
    endpoint's ``max_in_flight`` (``endpoint_limits.share_of``); the first alone sends the e-mails
    and, on SQLite, answers the doorbell and rings the others' bells (``worker.wake.<index>``)."""

    index: int = 0
    processes: int = 1

    @property
    def first(self) -> bool:
        return self.index == 0


SOLE = Share()


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{random.randrange(16**6):06x}"


class Worker:
    """One asyncio delivery worker; ``run(stop)`` until ``stop`` is set, ``wake()`` from any thread."""

    def __init__(
        self,
        ctx: AppContext,
        sender: Any,
        *,
        concurrency: int | None = None,
        batch_size: int | None = None,
        owner: str | None = None,
        circuit_policy: circuit.CircuitPolicy | None = None,
        shutdown_grace_s: float = SHUTDOWN_GRACE_S,
        share: Share = SOLE,
    ) -> None:
        settings = ctx.settings
        self.ctx = ctx
        self.share = share
        # Signing secrets are decrypted per attempt; the same ciphertext always gives the same key.
        self._send_ctx = dataclasses.replace(ctx, box=CachedBox(ctx.box))
        self.sender = sender
        self.concurrency = concurrency or settings.worker_concurrency
        self.batch_size = batch_size or settings.worker_batch_size
        self.owner = owner or default_owner()
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.shutdown_grace_s = shutdown_grace_s
        self.policy = circuit_policy or circuit.CircuitPolicy(
            cool_off=timedelta(seconds=settings.circuit_cool_off_s),
            probe_timeout=self.lease,
        )
        # An endpoint keeps at most this many rows waiting here; the next claims skip it.
        self.per_endpoint = self.batch_size
        self.max_held = self.batch_size * 10
        # Idle, the worker looks for work every poll interval (or when the earliest waiting row
        # comes due); busy, maintenance (leases, circuits, probes) keeps a beat of at most 1 s.
        self.poll_s = max(settings.poll_interval_s, 0.05)
        self.tick_s = min(max(settings.poll_interval_s, 0.1), 1.0)
        self._endpoints_changing = False  # a throttle or circuit somewhere: probes need the beat
        self.gates: Gates[Item] = Gates()
        self.held: dict[int, Item] = {}
        # Delivery id -> loop time its lease surely lasts until (taken before the claim or the
        # renewal that set it, so never later than the database's).
        self._lease_ends: dict[int, float] = {}
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="qhook-db")
        self._loop: asyncio.AbstractEventLoop | None = None
        # Set by whatever may give the claim loop something to do (a commit, room at a gate or in
        # hand, stop); one event awaited directly: the idle wait creates no task and no timer task.
        self._nudge = asyncio.Event()
        self._timed_out = False
        self._ordered_done: set[int] = set()  # ordered deliveries finished, not yet written
        self._slots = asyncio.Semaphore(self.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_tick = 0.0
        self._last_renew = 0.0
        self._last_statistics = float("-inf")  # SQLite: taken at the first tick, then when due
        self._last_statistics_look = float("-inf")
        self._last_retry_claim = 0.0
        self._retry_full = False
        self._wakes = 0
        self._wake_pending = False
        self._relay: list[Callable[[], None]] = []
        # Set by ``attach_wake``: every commit of this process that queues work calls ``wake()``,
        # so the PostgreSQL listener passes over the NOTIFYs of this process's own connections.
        self.woken_by_own_commits = False
        # (excluded origins, loop time, wake-ups so far) of the last first-lane claim that found
        # nothing beyond the excluded (saturated) endpoints: the same claim finds nothing more until
        # something is committed (a wake-up) or an endpoint frees up, so it is not repeated for up
        # to a second. Half of all claims under a single busy endpoint were such empty ones.
        self._nothing_beyond: tuple[frozenset[str], float, int] | None = None
        # Endpoints with failures since the last tick -> an error-report address: the tick checks
        # them against every worker's attempts in the database (the shared circuit decision).
        self._suspects: dict[str, str | None] = {}
        self.recorder = Recorder(
            ctx.db, self._db, self._written, batch_size=self.batch_size, owner=self.owner
        )

    # --- wake-ups ---------------------------------------------------------------------------

    def wake(self) -> None:
        """Thread-safe: new work was committed.

        Wake-ups that arrive while one is still on its way to the loop ride along with it: under
        a burst of commits each ``call_soon_threadsafe`` cost the committing thread more than its
        own SQL (bench/latency). The flag is cleared on the loop *before* the claim it triggers,
        so a commit after that point always sends a fresh wake-up.
        """
        loop = self._loop
        if self._wake_pending or loop is None or loop.is_closed():
            return
        self._wake_pending = True
        try:
            loop.call_soon_threadsafe(self._woken)
        except RuntimeError:  # the loop just closed
            self._wake_pending = False

    def _woken(self) -> None:
        self._wake_pending = False
        self._wakes += 1
        self._nudge.set()
        for ring in self._relay:  # the other processes of this `qhook worker` (SQLite)
            ring()

    async def _db(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    # --- main loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake_pending = False  # a wake-up left from an earlier loop never arrives
        recorder_stop = asyncio.Event()
        recorder_task = asyncio.create_task(self.recorder.run(recorder_stop))
        listener_stop = threading.Event()
        listener = self._start_listener(listener_stop)
        close_bell = self._start_bell()
        mailer_task = None
        if self.ctx.settings.smtp_url and self.share.first:
            every_s = min(mailer.CHECK_EVERY_S, max(self.ctx.settings.poll_interval_s, 0.2))
            mailer_task = asyncio.create_task(mailer.run_mailer(self.ctx, recorder_stop, every_s))
        stop_watch = asyncio.ensure_future(stop.wait())
        stop_watch.add_done_callback(lambda _: self._nudge.set())
        logger.info("worker started", extra={"action": "worker_start", "owner": self.owner})
        try:
            outage = 0  # cycles in a row the database was away
            while not stop.is_set():
                try:
                    progressed = await self._cycle()
                    if outage:
                        logger.info("database back", extra={"action": "worker_db_back"})
                    outage = 0
                except StoreError as exc:
                    # One line now and then, and a growing pause: it logged a traceback many
                    # times a second while the database was away.
                    outage += 1
                    if outage_rule.worth_saying(outage):
                        logger.warning(
                            "database unavailable: %s; trying again",
                            exc.for_operators,
                            extra={"action": "worker_db_unavailable", "cycles": outage},
                        )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), outage_rule.pause_s(outage))
                    continue
                except Exception:
                    logger.exception("worker cycle failed", extra={"action": "worker_cycle_failed"})
                    progressed = False
                if not progressed and not stop.is_set():
                    await self._idle()
        finally:
            stop_watch.cancel()
            listener_stop.set()
            close_bell()
            await self._shutdown()
            recorder_stop.set()
            await recorder_task
            if mailer_task is not None:
                await mailer_task
            if listener is not None:
                await asyncio.to_thread(listener.join, 2.0)
            self._executor.shutdown(wait=True)
            logger.info("worker stopped", extra={"action": "worker_stop", "owner": self.owner})

    async def _idle(self) -> None:
        """Until nudged or the timeout; at 200 deliveries/s a wait built from a task per event
        plus ``asyncio.wait`` was a measurable share of the loop's CPU per delivery."""
        timeout = await self._idle_timeout()
        if self._nudge.is_set():
            return
        self._timed_out = False
        timer = asyncio.get_running_loop().call_later(timeout, self._time_out)
        try:
            await self._nudge.wait()
        finally:
            timer.cancel()
        if self._timed_out:
            self._last_retry_claim = float("-inf")  # woke by the clock: a retry may be due now

    def _time_out(self) -> None:
        self._timed_out = True
        self._nudge.set()

    async def _idle_timeout(self) -> float:
        """How long to wait for a wake-up: the maintenance beat while anything is in hand, else
        the poll interval, shortened to when the earliest waiting row comes due."""
        if self.held or self._tasks or self._endpoints_changing or any(True for _ in self.gates):
            return min(self.poll_s, self.tick_s)
        try:
            due = await self._db(self._next_due)
        except Exception:
            logger.exception("next due lookup failed", extra={"action": "worker_next_due_failed"})
            return min(self.poll_s, self.tick_s)
        if due is None:
            return self.poll_s
        # A little past the due time: the claim compares with its own clock reading.
        return min(self.poll_s, max((due - utcnow()).total_seconds(), 0.0) + 0.005)

    def _next_due(self) -> datetime | None:
        with self.ctx.db.reading() as tx:
            return queue.next_due_after(tx, utcnow())

    async def _cycle(self) -> bool:
        """One round: maintenance when due, then claims. True when it claimed a full batch."""
        loop_now = asyncio.get_running_loop().time()
        if loop_now - self._last_tick >= self.tick_s:
            self._last_tick = loop_now
            await self._tick()
        self._nudge.clear()
        if self.recorder.stalled:
            # Outcomes wait to be written (the database was away): a claim now could take back
            # rows this worker has sent whose leases ran out meanwhile, and send them again.
            return False
        room = self.max_held - len(self.held)
        if room < min(self.batch_size // 4, self.max_held // 4) and self.held:
            return False
        full = False
        for lane in ("first", "retry"):
            limit = min(self.batch_size, room)
            if lane == "retry":
                # Retries come due by the clock, not by wake-ups: look once per poll interval
                # unless the last look found a full batch.
                if not self._retry_full and loop_now - self._last_retry_claim < self.tick_s:
                    continue
                self._last_retry_claim = loop_now
                # Retries may fill at most half the worker: fresh events always find room.
                retries = sum(1 for i in self.held.values() if i.is_retry)
                limit = min(limit, self.max_held // 2 - retries)
            if limit <= 0:
                continue
            exclude = self.gates.saturated(self.per_endpoint)
            if lane == "first" and self._known_empty(exclude, loop_now):
                continue
            claimed = await self._db(self._claim, lane, limit, exclude)
            self._leased(claimed, loop_now)
            if lane == "first":
                self._learn(exclude, claimed, loop_now)
            self._dispatch(claimed)
            room -= len(claimed)
            full = full or len(claimed) >= limit
            if lane == "retry":
                self._retry_full = len(claimed) >= limit
        return full

    def _leased(self, items: list[Item], since: float) -> None:
        """Leases taken at loop time ``since`` or later last at least the lease from then."""
        until = since + self.lease.total_seconds()
        for item in items:
            self._lease_ends[item.delivery.id] = until

    def _lease_lasts(self, item: Item) -> bool:
        """May a send of ``item`` start now: does this worker's lease last long enough?"""
        timeout_s = prepare.timeout_of(item.signal.config) if item.signal else prepare.MAX_TIMEOUT_S
        needed = min(timeout_s + LEASE_SPARE_S, self.lease.total_seconds() / 2)
        ends = self._lease_ends.get(item.delivery.id, float("inf"))
        return asyncio.get_running_loop().time() + needed <= ends

    def _known_empty(self, exclude: list[str], loop_now: float) -> bool:
        known = self._nothing_beyond
        return (
            known is not None
            and known[2] == self._wakes
            and loop_now - known[1] < 1.0
            and known[0].issubset(exclude)
        )

    def _learn(self, exclude: list[str], claimed: list[Item], loop_now: float) -> None:
        known = self._nothing_beyond
        if exclude and not claimed:
            self._nothing_beyond = (frozenset(exclude), loop_now, self._wakes)
        elif known is not None and any(i.delivery.endpoint not in known[0] for i in claimed):
            self._nothing_beyond = None  # other endpoints have rows after all

    def _claim(self, lane: queue.Lane, limit: int, exclude: list[str]) -> list[Item]:
        now = utcnow()
        # The claim is one atomic UPDATE; what follows only reads. On PostgreSQL they run without
        # BEGIN and COMMIT round trips (should a read fail, the leases run out: sent later).
        with self.ctx.db.autocommit() as tx:
            rows = queue.claim(
                tx,
                owner=self.owner,
                now=now,
                lease_until=now + self.lease,
                limit=limit,
                lane=lane,
                exclude_endpoints=exclude,
            )
            return self._items(tx, rows, probe=False)

    def _items(self, tx: Tx, rows: list[queue.QueuedDelivery], *, probe: bool) -> list[Item]:
        if not rows:
            return []
        signals = queue.send_signals(tx, [d.signal_id for d in rows if d.signal_id is not None])
        states = endpoint_store.states(tx, {d.endpoint for d in rows})
        for d in rows:
            signal = signals.get(d.signal_id) if d.signal_id is not None else None
            self._configure(self.gates.get(d.endpoint), signal, states.get(d.endpoint))
        return [Item(d, signals.get(d.signal_id) if d.signal_id is not None else None, probe) for d in rows]

    def _configure(
        self, gate: Gate[Item], signal: queue.SendSignal | None, state: endpoint_store.EndpointState | None
    ) -> None:
        config = signal.config if signal else {}
        try:
            gate.max_in_flight = endpoint_limits.share_of(
                endpoint_limits.max_in_flight_of(config, state.max_in_flight if state else None),
                self.share.index,
                self.share.processes,
            )
            gate.rate = endpoint_limits.rate_of(config, state.rate_limit if state else None)
        except (ValueError, TypeError):
            logger.warning(
                "bad endpoint limits ignored", extra={"action": "limits_invalid", "origin": gate.origin}
            )

    def _dispatch(self, items: list[Item]) -> None:
        touched: dict[str, Gate[Item]] = {}
        for item in items:
            self.held[item.delivery.id] = item
            gate = self.gates.get(item.delivery.endpoint)
            if item.probe:
                gate.in_flight += 1
                self._spawn(gate, item)
                continue
            gate.push(item, is_retry=item.is_retry)
            touched[gate.origin] = gate
        for gate in touched.values():
            self._pump(gate)

    # --- per endpoint -----------------------------------------------------------------------

    def _pump(self, gate: Gate[Item]) -> None:
        """Start sends while the endpoint has a free slot; never wait here."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        while gate.can_start(now):
            item, _ = gate.pop()
            gate.in_flight += 1
            self._spawn(gate, item)
        if gate.waiting and not gate.blocked and gate.paused_until > now and not gate.timer_armed:
            gate.timer_armed = True

            def _resume() -> None:
                gate.timer_armed = False
                self._pump(gate)

            loop.call_at(gate.paused_until, _resume)

    def _spawn(self, gate: Gate[Item], item: Item) -> None:
        task = asyncio.create_task(self._lane(gate, item))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lane(self, gate: Gate[Item], item: Item) -> None:
        """One busy slot of an endpoint: send ``item``, then the gate's next while it may start one.

        A task per slot rather than per delivery: creating, scheduling and finishing a task for
        every send was a measurable share of the worker's CPU under steady traffic.
        """
        loop = asyncio.get_running_loop()
        while True:
            await self._run_one(gate, item)
            if not gate.can_start(loop.time()):
                break
            item, _ = gate.pop()
            gate.in_flight += 1
        self._pump(gate)  # arms the resume timer when the gate is paused

    async def _run_one(self, gate: Gate[Item], item: Item) -> None:
        rate_slot: tuple[str, int] | None = None
        try:
            # A retry past its max_age is refused without sending: it takes none of the slots.
            if (
                gate.rate is not None
                and not item.probe
                and not attempt_mod.too_late(item.delivery, item.signal, utcnow())
            ):
                if self._gave_back(item):  # before taking one of the endpoint's shared slots
                    return
                rate_slot = await self._rate_slot(gate, gate.rate, item)
                if rate_slot is None:
                    return
            async with self._slots:
                if self._gave_back(item):  # checked when the send can start (slots take a while)
                    return
                await self._attempt(gate, item)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "delivery attempt crashed",
                extra={"action": "delivery_crashed", "delivery_id": item.delivery.id},
            )
            # The lease runs out and the delivery is tried again: nothing is lost.
            self.recorder.op(_noop, done_ids=[item.delivery.id])
        finally:
            if rate_slot is not None:
                slot, period_ms = rate_slot
                free_ms = int(utcnow().timestamp() * 1000) + period_ms
                self.recorder.op(functools.partial(_free_rate_slot, slot=slot, at_ms=free_ms))
            gate.in_flight -= 1
            if gate.waiting + gate.in_flight == self.per_endpoint - 1:
                # No longer full: claim more now, while a whole batch still waits here. Claiming
                # only at half, a busy endpoint sat idle a third of the time (bench/throughput,
                # SQLite): the claim took longer than the half batch lasted.
                self._nudge.set()

    def _gave_back(self, item: Item) -> bool:
        """Give ``item`` back unsent when the lease may run out before its send ends: renewals
        failed (the database is away) or came too late, and another worker may take it over. No
        attempt is burnt."""
        if self._lease_lasts(item):
            return False
        logger.info(
            "lease running out: delivery given back unsent",
            extra={"action": "lease_short", "delivery_id": item.delivery.id},
        )
        ids = [item.delivery.id]
        self.recorder.op(functools.partial(_release, ids=ids, owner=self.owner), done_ids=ids)
        return True

    async def _rate_slot(self, gate: Gate[Item], rate: Rate, item: Item) -> tuple[str, int] | None:
        """Take one of the endpoint's shared send slots: (slot, period ms); or wait at the gate."""
        slots, period_ms = endpoint_limits.rate_slots(rate)
        timeout_s = prepare.timeout_of(item.signal.config) if item.signal else prepare.MAX_TIMEOUT_S
        hold_ms = int((timeout_s + 5) * 1000) + period_ms  # a send ends by then, even a lost one
        key = endpoint_limits.rate_key(gate.origin, rate)
        slot, wait_ms = await self._db(self._take_slot, key, slots, period_ms, hold_ms)
        if slot is not None:
            return slot, period_ms
        gate.paused_until = asyncio.get_running_loop().time() + wait_ms / 1000
        gate.push(item, is_retry=item.is_retry, front=True)  # no attempt burnt while waiting
        return None

    def _take_slot(self, key: str, slots: int, period_ms: int, hold_ms: int) -> tuple[str | None, int]:
        now_ms = int(utcnow().timestamp() * 1000)
        with self.ctx.db.transaction() as tx:
            return rate_slots.take(tx, key, slots=slots, period_ms=period_ms, now_ms=now_ms, hold_ms=hold_ms)

    async def _attempt(self, gate: Gate[Item], item: Item) -> None:
        result = await attempt_mod.perform(
            self._send_ctx, self.sender, item.delivery, item.signal, probe=item.probe
        )
        self._conclude(gate, item, result)

    # --- outcomes ---------------------------------------------------------------------------

    def _conclude(self, gate: Gate[Item], item: Item, result: attempt_mod.AttemptResult) -> None:
        d = item.delivery
        decision = result.decision
        ops: list[Op] = []
        outcome = STATUS_OF[decision.outcome]
        COUNTED[outcome].inc()
        if result.duration_ms is not None:
            metrics.ATTEMPT_SECONDS.observe(result.duration_ms / 1000)
        if decision.outcome == "succeeded" and d.next_trigger not in queue.ON_REQUEST:
            # A redelivery or replay is sent when someone asks, days later maybe: not a delay.
            metrics.EVENT_TO_DELIVERY_SECONDS.observe(
                max((result.finished_at - d.created_at).total_seconds(), 0)
            )
        email = item.signal.error_email if item.signal else None

        if decision.pause_endpoint_until is not None:
            until = decision.pause_endpoint_until
            wait_s = max((until - result.finished_at).total_seconds(), 0.0)
            gate.paused_until = max(gate.paused_until, asyncio.get_running_loop().time() + wait_s)
            ops.append(
                lambda tx, now: endpoint_store.throttle(
                    tx, d.endpoint, until, now, f"Retry-After until {until:%Y-%m-%d %H:%M:%S} UTC"
                )
            )
            self._release_waiting(gate)
        if decision.pause_signal and d.signal_id is not None:
            signal_id = d.signal_id
            ops.append(lambda tx, now: queue.pause_signal(tx, signal_id, result.hint or decision.reason))
            self._release_signal(signal_id)
        if decision.outcome == "failed" and email:
            text = _failure_text(d, result)
            ops.append(
                lambda tx, now: error_reports.add(
                    tx,
                    endpoint=d.endpoint,
                    email=email,
                    kind="delivery_failed",
                    delivery_id=d.id,
                    text=text,
                    now=now,
                )
            )
        ops.extend(self._circuit_ops(gate, item, result, email))
        finish = queue.Finish(
            delivery_id=d.id,
            status=outcome,
            attempt_count=result.attempt.number,
            next_attempt_at=decision.next_attempt_at if decision.outcome == "retry" else None,
            last_status_code=result.status_code,
            last_error_kind=result.error_kind,
            hint=result.hint,
            delivered_at=result.finished_at if decision.outcome == "succeeded" else None,
            probe_failures=d.probe_failures + 1 if item.probe and decision.outcome != "succeeded" else None,
        )
        for earlier in result.earlier:  # a call refused with 401 before a fresh OAuth2 token
            self.recorder.add(earlier, None)
        # The next event of an ordered delivery's result may go once this is written: not kept
        # waiting for other outcomes to share the transaction.
        next_waits = d.ordered and decision.final
        self.recorder.add(result.attempt, finish, ops, urgent=next_waits)
        if next_waits:
            self._ordered_done.add(d.id)

    def _circuit_ops(
        self, gate: Gate[Item], item: Item, result: attempt_mod.AttemptResult, email: str | None
    ) -> list[Op]:
        origin = item.delivery.endpoint
        ok = result.decision.outcome == "succeeded"
        if item.probe:
            # An answer about this one message (a 4xx, or Retry-After) is an endpoint that is up:
            # kept open, a delivery the receiver refuses held every other one back.
            answered = result.status_code is not None and not attempt_mod.counts_for_circuit(result)
            if ok or answered:
                gate.blocked = False
                gate.window = circuit.Window()
                why = (
                    "probe succeeded"
                    if ok
                    else f"probe answered HTTP {result.status_code}: the endpoint is up"
                )
                return [functools.partial(_close, origin=origin, detail=why)]
            detail = f"probe failed: {result.hint or result.decision.reason}"
            return [functools.partial(_probe_failed, origin=origin, detail=detail)]
        if not attempt_mod.counts_for_circuit(result) or gate.blocked:
            return []
        if not ok:
            self._suspects[origin] = email or self._suspects.get(origin)
        if not gate.record(result.finished_at, ok, self.policy):
            return []
        gate.blocked = True
        detail = circuit.summary(gate.window)
        gate.window = circuit.Window()
        self._release_waiting(gate)
        return [functools.partial(_open_circuit, origin=origin, detail=detail, email=email)]

    def _release_waiting(self, gate: Gate[Item]) -> None:
        """Give back the leases of everything waiting at this gate (it is paused or open)."""
        items = gate.drain()
        if items:
            ids = [i.delivery.id for i in items]
            self.recorder.op(functools.partial(_release, ids=ids, owner=self.owner), done_ids=ids)

    def _release_signal(self, signal_id: int) -> None:
        for gate in self.gates:
            keep: list[Item] = []
            give: list[Item] = []
            for item in gate.drain():
                (give if item.delivery.signal_id == signal_id else keep).append(item)
            for item in keep:
                gate.push(item, is_retry=item.is_retry)
            if give:
                ids = [i.delivery.id for i in give]
                self.recorder.op(functools.partial(_release, ids=ids, owner=self.owner), done_ids=ids)

    def _written(self, done_ids: list[int]) -> None:
        before = len(self.held)
        for delivery_id in done_ids:
            self.held.pop(delivery_id, None)
            self._lease_ends.pop(delivery_id, None)
        if self._ordered_done.intersection(done_ids):
            self._ordered_done.difference_update(done_ids)
            self._woken()  # a claim now finds the next event of those results
        threshold = self.max_held - self.batch_size
        if before >= threshold > len(self.held):
            self._nudge.set()

    # --- maintenance ------------------------------------------------------------------------

    async def _tick(self) -> None:
        """Sync endpoint state with the database, send probes, hold, renew leases."""
        loop_now = asyncio.get_running_loop().time()
        renew_ids: list[int] = []
        if loop_now - self._last_renew >= self.lease.total_seconds() / 3:
            self._last_renew = loop_now
            renew_ids = list(self.held)
        blocked, probes, renewed = await self._db(self._maintain, renew_ids)
        self._leased([self.held[i] for i in renewed if i in self.held], loop_now)
        self._leased(probes, loop_now)
        sqlite = self.ctx.db.is_sqlite
        due = sqlite and loop_now - self._last_statistics >= STATISTICS_EVERY_S
        if due or not sqlite or loop_now - self._last_statistics_look >= SQLITE_STATISTICS_LOOK_S:
            self._last_statistics_look = loop_now
            if due:
                self._last_statistics = loop_now
            if await self._db(queue.refresh_statistics, self.ctx.db, due=due) and not due:
                logger.info(
                    "the deliveries table outgrew its planner statistics: analysed it",
                    extra={"action": "statistics_refreshed"},
                )
        now = utcnow()
        self._endpoints_changing = any(
            state.circuit_state != "closed" or (state.throttled_until or now) > now
            for state in blocked.values()
        )
        suspects, self._suspects = self._suspects, {}
        for origin, email in suspects.items():
            # A recorder op: it runs after this worker's pending attempts are written.
            check = functools.partial(_check_circuit, origin=origin, email=email, policy=self.policy)
            self.recorder.op(check)
        for gate in self.gates:
            state = blocked.get(gate.origin)
            if state is not None and not gate.blocked:
                gate.blocked = True
                self._release_waiting(gate)
            elif state is None and gate.blocked:
                gate.blocked = False
                gate.window = circuit.Window()
                self._pump(gate)
        self._dispatch(probes)
        self.gates.forget_idle()

    def _maintain(
        self, renew_ids: list[int]
    ) -> tuple[dict[str, endpoint_store.EndpointState], list[Item], list[int]]:
        now = utcnow()
        probes: list[Item] = []
        renewed: list[int] = []
        with self.ctx.db.transaction() as tx:
            if renew_ids:
                renewed = queue.renew_leases(tx, renew_ids, owner=self.owner, lease_until=now + self.lease)
            blocked = endpoint_store.blocked_origins(tx, now)
            for origin, state in blocked.items():
                if state.circuit_state != "closed":
                    queue.hold_endpoint(tx, origin, now)
            for origin in endpoint_store.probe_candidates(
                tx, now, self.policy.cool_off, self.policy.probe_timeout
            ):
                if not endpoint_store.start_probe(
                    tx, origin, now, self.policy.cool_off, self.policy.probe_timeout
                ):
                    continue
                found = queue.claim_probe(
                    tx, origin=origin, owner=self.owner, now=now, lease_until=now + self.lease
                )
                if found is None:
                    endpoint_store.abandon_probe(tx, origin, now)
                    continue
                probes.extend(self._items(tx, [found], probe=True))
        return blocked, probes, renewed

    # --- shutdown ---------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        for gate in self.gates:
            self._release_waiting(gate)
        if self._tasks:
            _, pending = await asyncio.wait(
                set(self._tasks),
                timeout=self.shutdown_grace_s,
            )
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        leftover = list(self.held)
        if leftover:
            self.recorder.op(functools.partial(_release, ids=leftover, owner=self.owner), done_ids=leftover)

    def _start_bell(self) -> Callable[[], None]:
        """SQLite: other processes (``qhook serve --no-worker``, the CLI) wake this worker through
        the doorbell; PostgreSQL's NOTIFY does this there."""
        if not self.ctx.db.is_sqlite or self._loop is None:
            return lambda: None
        file, folder = self.ctx.db.file, self.ctx.settings.data_dir
        if self.share.first:
            # Rings reach the first process only: it passes each wake-up on to the others.
            others = range(1, self.share.processes)
            self._relay = [doorbell.ringer(doorbell.path_for(file, folder, i)) for i in others]
        return doorbell.listen(self._loop, doorbell.path_for(file, folder, self.share.index), self.wake)

    def _start_listener(self, stop: threading.Event) -> threading.Thread | None:
        if self.ctx.db.is_sqlite:
            return None
        thread = threading.Thread(
            target=queue.listen,
            args=(self.ctx.db, self.wake, stop),
            kwargs={"skip_own": lambda: self.woken_by_own_commits},
            name="qhook-listen",
            daemon=True,
        )
        thread.start()
        return thread


def _noop(tx: Tx, now: datetime) -> None:
    """Nothing to write; the ids just leave the worker's hands."""


def _open_circuit(tx: Tx, now: datetime, *, origin: str, detail: str, email: str | None) -> None:
    if endpoint_store.open_circuit(tx, origin, now, detail):
        # Logged by the one worker that opened it, once; another (or this one a moment ago) did not.
        logger.warning("circuit opened", extra={"action": "circuit_open", "origin": origin, "why": detail})
        if email:
            text = (
                f"The endpoint {origin} stopped answering: {detail}. "
                "Its deliveries wait (held) and are sent when a probe succeeds."
            )
            error_reports.add(
                tx, endpoint=origin, email=email, kind="circuit_open", delivery_id=None, text=text, now=now
            )
    queue.hold_endpoint(tx, origin, now)


def _check_circuit(
    tx: Tx, now: datetime, *, origin: str, email: str | None, policy: circuit.CircuitPolicy
) -> None:
    """Sustained failure counted over every worker's attempts: two workers each seeing half open it."""
    state = endpoint_store.get(tx, origin)
    if state is not None and state.circuit_state != "closed":
        return
    since = now - policy.window
    tried, failed = endpoint_store.circuit_counts(tx, origin, since, attempt_mod.CIRCUIT_FAILURE_KINDS)
    if not circuit.sustained_failure(tried, failed, policy):
        return
    minutes = policy.window.total_seconds() / 60
    detail = f"{failed} of {tried} attempts failed in the last {minutes:g} minutes (all workers)"
    _open_circuit(tx, now, origin=origin, detail=detail, email=email)


def _free_rate_slot(tx: Tx, now: datetime, *, slot: str, at_ms: int) -> None:
    rate_slots.free_from(tx, slot, at_ms)


def _close(tx: Tx, now: datetime, *, origin: str, detail: str) -> None:
    endpoint_store.close_circuit(tx, origin, now, detail)
    queue.unhold_endpoint(tx, origin, now)


def _probe_failed(tx: Tx, now: datetime, *, origin: str, detail: str) -> None:
    endpoint_store.probe_failed(tx, origin, now, detail)
    queue.hold_endpoint(tx, origin, now)


def _release(tx: Tx, now: datetime, *, ids: list[int], owner: str) -> None:
    queue.release(tx, ids, owner=owner)


def _failure_text(d: queue.QueuedDelivery, result: attempt_mod.AttemptResult) -> str:
    status = f"HTTP {result.status_code}" if result.status_code else (result.error_kind or "error")
    # Not the query: receivers take tokens there (?token=...), and mail travels far.
    url = d.url.split("?", 1)[0] + ("?..." if "?" in d.url else "")
    return (
        f"Delivery {d.webhook_id} to {url} failed for good after {result.attempt.number} attempt(s) "
        f"({status}). {result.hint or ''}".strip()
    )


# --- processes ----------------------------------------------------------------------------------


class SingleWorkerLock:
    """SQLite serves one worker: an exclusive lock file next to the database refuses a second one."""

    def __init__(self, ctx: AppContext) -> None:
        self.path = doorbell.sqlite_folder(ctx.db.file, ctx.settings.data_dir) / "worker.lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise QhookError(
                f"Another qhook worker already runs against this SQLite database (lock {self.path}). "
                "SQLite serves one worker (inside `qhook serve` or one `qhook worker`, with its "
                "--processes): beside a "
                "running `qhook worker`, start the API with `qhook serve --no-worker`; "
                "use PostgreSQL to run several workers."
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def attach_wake(ctx: AppContext, worker: Worker) -> Callable[[], None]:
    """Make ``ctx.wake`` and ``ctx.wake_here`` wake this worker too (thread-safe); returns a
    function that puts the previous ones back.

    On SQLite they wake this worker only: it is the database's one worker, and the doorbell the
    others ring is its own. On PostgreSQL the worker's listener then passes over the NOTIFYs of
    this process's own commits, which have woken it already.
    """
    previous, previous_here = ctx.wake, ctx.wake_here

    def wake() -> None:
        worker.wake()
        previous()

    def wake_here() -> None:
        worker.wake()
        previous_here()

    def restore() -> None:
        ctx.wake, ctx.wake_here = previous, previous_here
        worker.woken_by_own_commits = False

    if ctx.db.is_sqlite:
        ctx.wake = ctx.wake_here = worker.wake
    else:
        ctx.wake, ctx.wake_here = wake, wake_here
    worker.woken_by_own_commits = True
    return restore


async def run_until_stopped(
    ctx: AppContext, stop: asyncio.Event, *, concurrency: int | None = None, share: Share = SOLE
) -> None:
    """A worker with its own sender until ``stop``; the SQLite lock is the caller's."""
    from qhook.delivery.sender import Sender

    sender = Sender(ctx.settings)
    worker = Worker(ctx, sender, concurrency=concurrency, share=share)
    restore_wake = attach_wake(ctx, worker)
    try:
        await worker.run(stop)
    finally:
        restore_wake()
        await sender.close()


def serve_worker(
    ctx: AppContext,
    *,
    concurrency: int | None = None,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
    processes: int | None = None,
    cpu_affinity: bool | None = None,
) -> None:
    """``qhook worker``: run until SIGINT/SIGTERM; Prometheus metrics on ``metrics_port`` if given.
    With ``processes`` (QHOOK_WORKER_PROCESSES) above 1, this process is the first of them and
    runs the others (``delivery.fleet``); process i serves its metrics on ``metrics_port + i``
    and, with ``cpu_affinity`` (QHOOK_WORKER_CPU_AFFINITY), runs on the i-th CPU it may use.

    A database that refuses qhook's credentials or is not migrated stops it at once with the
    reason (it ran on, logging tracebacks, delivering nothing); one that cannot be reached yet is
    waited for, and checked once it answers: started while PostgreSQL was down, a worker with the
    wrong key skipped the check and used up its deliveries' retries ("cannot be decrypted")."""
    from qhook.delivery import fleet as fleet_mod

    count = processes or ctx.settings.worker_processes
    port = metrics_port if metrics_port is not None else ctx.settings.worker_metrics_port
    host = metrics_host or ctx.settings.worker_metrics_host
    refused = fleet_mod.metrics_ports_past_the_last(port, count)
    if refused is not None:
        raise QhookError(refused)
    bound = ctx.settings.worker_cpu_affinity if cpu_affinity is None else cpu_affinity
    cpus = fleet_mod.allowed_cpus() if bound else ()  # before this process is bound to one
    if not ctx.db.is_sqlite:  # SQLite was opened, and migrated, with the context
        migrate.wait_for(ctx.db)
    migrate.require_usable(ctx.db)
    require_secret_key(ctx)
    lock = SingleWorkerLock(ctx) if ctx.db.is_sqlite else None
    if lock is not None:
        lock.acquire()
    stop_metrics = None
    if port is not None:
        try:
            stop_metrics = metrics.serve_http(ctx, port, host)
        except OSError as exc:
            if lock is not None:
                lock.release()
            raise QhookError(f"Cannot serve metrics on port {port}: {exc.strerror or exc}") from exc
    options = fleet_mod.Options(ctx.settings, count, concurrency, port, host, cpus)
    fleet = fleet_mod.Fleet(options) if count > 1 else None

    async def main(stop: asyncio.Event) -> None:
        watching = None
        if fleet is not None:
            fleet.start()
            watching = asyncio.create_task(fleet.watch_until(stop))
        if cpus:
            fleet_mod.bind(0, cpus)
        try:
            await run_until_stopped(ctx, stop, concurrency=concurrency, share=Share(0, count))
        finally:
            stop.set()
            if watching is not None:
                await watching

    try:
        run_until_signalled(main)
    finally:
        if fleet is not None:
            fleet.signal_stop()  # a no-op after a clean stop; after a crash here they stop too
            fleet.join()
        if stop_metrics is not None:
            stop_metrics()
        if lock is not None:
            lock.release()


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)`` on the worker's event loop (``_loop_factory``); SIGINT and SIGTERM set
    ``stop``. What a worker process runs: ``qhook worker`` and each of its ``--processes``."""

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        heap.freeze_startup_objects()  # full collections then skip what start-up made
        await main(stop)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(run())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn[standard] brings it; ``qhook serve`` runs on it already):
    the worker's loop thread spent ~10 % less CPU per delivery on it (bench/throughput, SQLite)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def start_in_app(app: Any) -> None:
    """Lifespan hook for ``qhook serve``: the worker in the API's loop; the API's commits wake it.
    With QHOOK_WORKER_PROCESSES above 1 it is process 0 of them, and serve runs the others
    (``delivery.fleet``; process i serves metrics on QHOOK_WORKER_METRICS_PORT + i when set)."""
    from qhook.delivery import fleet as fleet_mod

    ctx: AppContext = app.state.ctx
    settings = ctx.settings
    count = settings.worker_processes
    stop = asyncio.Event()
    app.state.worker_crash = None
    share = Share(0, count)
    task = asyncio.create_task(_supervised(app, ctx, stop, share), name="qhook-worker")
    fleet = None
    watching = None
    if count > 1:
        port = settings.worker_metrics_port
        refused = fleet_mod.metrics_ports_past_the_last(port, count)
        if refused is not None:  # the API still serves: the delivery processes run without metrics
            port = None
            logger.error(
                "%s (QHOOK_WORKER_METRICS_PORT + QHOOK_WORKER_PROCESSES): the delivery processes "
                "serve no metrics",
                refused,
                extra={"action": "metrics_unavailable"},
            )
        # Its own process answers the API too and stays unbound; processes 1.. are bound.
        cpus = fleet_mod.allowed_cpus() if settings.worker_cpu_affinity else ()
        options = fleet_mod.Options(settings, count, None, port, settings.worker_metrics_host, cpus)
        fleet = fleet_mod.Fleet(options)
        fleet.start()
        watching = asyncio.create_task(fleet.watch_until(stop), name="qhook-worker-processes")

    async def _stop() -> None:
        stop.set()
        await task
        if watching is not None and fleet is not None:
            await watching
            await asyncio.to_thread(fleet.join)

    app.state.on_stop.append(_stop)


async def _supervised(app: Any, ctx: AppContext, stop: asyncio.Event, share: Share = SOLE) -> None:
    """Run the worker until ``stop``; one that stops by an error is logged at once and started
    again after a pause (1 s, doubling to a minute). It died silently before: ``qhook serve``
    answered /readyz "ready" while nothing was delivered, and the traceback came at shutdown.
    Meanwhile ``app.state.worker_crash`` holds (loop time, why) for /readyz."""
    loop = asyncio.get_running_loop()
    crashes = 0
    while not stop.is_set():
        started = loop.time()
        try:
            await run_until_stopped(ctx, stop, share=share)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A worker that ran a while before it stopped starts again soon: the pause doubles
            # only while it keeps stopping.
            crashes = restarts.in_a_row(crashes, loop.time() - started)
            pause = restarts.pause_s(crashes)
            why = exc.for_operators if isinstance(exc, QhookError) else f"{type(exc).__name__}: {exc}"
            app.state.worker_crash = (loop.time(), why)
            logger.exception(
                "delivery worker stopped: %s; starting it again in %g s",
                why,
                pause,
                extra={"action": "worker_crashed", "crashes": crashes},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
