"""The Integration Hub: find a delivery, understand it, send it again, cancel it; endpoint health;
stats for charts; retention. Each change runs in one transaction with its audit entry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from qhook import background
from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.domain import credentials, hints, ids
from qhook.domain.rates import parse_rate
from qhook.domain.urls import origin_of
from qhook.errors import Conflict, Forbidden, NotFound, QhookError, ValidationFailed, field_error
from qhook.services import audit
from qhook.store import deliveries as delivery_store
from qhook.store import endpoints as endpoint_store
from qhook.store import events as event_store
from qhook.store import hub as store
from qhook.store import hub_stats, queue, retention
from qhook.store import workflows as workflow_store
from qhook.store.db import Tx
from qhook.store.endpoints import EndpointLogEntry
from qhook.store.events import EventRecord
from qhook.store.hub import AttemptRecord, DeliveryFilter, DeliveryRecord, EndpointRecord
from qhook.store.hub_stats import Latency

logger = logging.getLogger("qhook.hub")

ACTIONS = ("new", "modified", "deleted", "date", "manual", "test")
REDELIVERABLE = ("failed", "succeeded", "retrying")
CANCELLABLE = ("pending", "retrying", "held")
REPLAYABLE = ("failed", "succeeded", "cancelled")
# Without a status a replay sends again what failed only: "failed and succeeded" sent everything
# the ERP already had again, from `qhook replay --endpoint X` after a fix.
REPLAY_DEFAULT = ("failed",)
MAX_LIMIT = 500
MAX_STATS_DAYS = 31


@dataclass(frozen=True, slots=True)
class Filters:
    """The Hub's filters as people give them (validated by ``to_store``)."""

    status: str | None = None
    workflow_id: int | None = None
    signal_id: int | None = None
    set_id: int | None = None
    result_id: int | None = None
    endpoint: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None
    event: str | None = None  # "evt_..." (what receivers get) or the internal event id

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class DeliveryDetail:
    delivery: DeliveryRecord
    body: str
    request_headers: dict[str, str]
    attempts: list[AttemptRecord]
    waiting: str | None = None  # why a delivery not yet finished has not gone (hints.waiting)


@dataclass(frozen=True, slots=True)
class EndpointSummary:
    origin: str
    state: str  # ok throttled circuit_open paused
    paused: bool
    throttled_until: datetime | None
    circuit_open_since: datetime | None
    last_hour: Latency
    last_day: Latency
    queue_depth: int
    rate_limit: str | None = None
    max_in_flight: int | None = None
    last_ok: bool | None = None  # the newest attempt of the last hour succeeded (None: no attempt)


@dataclass(frozen=True, slots=True)
class HourStats:
    hour: datetime
    deliveries: dict[str, int]
    latency: Latency


@dataclass(frozen=True, slots=True)
class Stats:
    since: datetime
    until: datetime
    hours: list[HourStats]


@dataclass(frozen=True, slots=True)
class PurgeReport:
    dry_run: bool
    deliveries: dict[str, int] = field(default_factory=dict)  # per status
    attempts: int = 0
    records: dict[str, int] = field(default_factory=dict)  # endpoint log, error reports, e-mails, ...

    @property
    def total(self) -> int:
        return sum(self.deliveries.values())


EMPTY_LATENCY = Latency(0, 0, None, None, None)


# --- the log -------------------------------------------------------------------------------------


def to_store(filters: Filters, set_ids: frozenset[int] | None = None) -> DeliveryFilter:
    """Validate people's filters (422 naming the field) and turn them into the store's."""
    if filters.status is not None and filters.status not in store.STATUSES:
        raise field_error("status", f"one of {', '.join(store.STATUSES)}")
    if filters.action is not None and filters.action not in ACTIONS:
        raise field_error("action", f"one of {', '.join(ACTIONS)}")
    since, until = _utc(filters.since, "since"), _utc(filters.until, "until")
    if since and until and since >= until:
        raise field_error("until", "a time after since")
    endpoint = filters.endpoint
    if endpoint is not None:
        endpoint = _origin(endpoint, "endpoint")
    q = filters.q.strip() if filters.q else None
    if q is not None and len(q) > 200:
        raise field_error("q", "at most 200 characters")
    if q is not None and "\x00" in q:  # no database stores or matches one
        raise field_error("q", "text without NUL characters")
    return DeliveryFilter(
        statuses=(filters.status,) if filters.status else (),
        workflow_id=filters.workflow_id,
        signal_id=filters.signal_id,
        set_id=filters.set_id,
        result_id=filters.result_id,
        endpoint=endpoint,
        action=filters.action,
        since=since,
        until=until,
        q=q or None,
        set_ids=set_ids,
    )


def _utc(moment: datetime | None, name: str) -> datetime | None:
    """An aware time in UTC; a naive one, or one whose UTC falls outside the years 1 to 9999
    (0001-01-01T00:00+05:00 was an OverflowError: a 500), is a 422 naming the parameter."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise field_error(name, "an ISO 8601 time with a zone, e.g. 2025-10-02T13:37:00Z")
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise field_error(name, "a time between the years 1 and 9999 in UTC") from exc


def _origin(text: str, name: str) -> str:
    """An origin as the queue keys it: "https://erp.example.com" becomes "https://erp.example.com:443"."""
    try:
        origin = origin_of(text.strip())
    except (ValueError, QhookError) as exc:
        raise field_error(name, "an origin such as https://erp.example.com:443") from exc
    if not origin.startswith(("http://", "https://")) or origin.endswith("://:0"):
        raise field_error(name, "an origin such as https://erp.example.com:443")
    return origin


def list_deliveries(
    ctx: AppContext,
    filters: Filters,
    *,
    limit: int = 50,
    cursor: str | None = None,
    set_ids: frozenset[int] | None = None,
) -> tuple[list[DeliveryRecord], str | None]:
    """One page, newest first, and the cursor of the next page (None on the last)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise field_error("limit", f"between 1 and {MAX_LIMIT}")
    before_id = ids.read_cursor(cursor)
    wanted = to_store(filters, set_ids)
    with ctx.db.reading() as tx:
        if filters.event is not None:
            event = _event_of(tx, filters.event)
            if event is None:
                return [], None
            # The event's deliveries share its result: filter on both to walk the result's index.
            result_id = wanted.result_id if wanted.result_id is not None else event.result_id
            wanted = replace(wanted, event_id=event.id, result_id=result_id)
        if filters.q is not None and _is_webhook_id(filters.q.strip()):
            return _by_webhook_id(tx, wanted, filters.q.strip(), before_id), None
        rows = store.list_deliveries(tx, wanted, limit=limit + 1, before_id=before_id)
    return ids.cut_page(rows, limit)


def _is_webhook_id(text: str) -> bool:
    rest = text[4:]
    return text.startswith("msg_") and 1 <= len(rest) <= 36 and rest.isascii() and rest.isalnum()


def _by_webhook_id(
    tx: Tx, wanted: store.DeliveryFilter, webhook_id: str, before_id: int | None
) -> list[store.DeliveryRecord]:
    """``q`` holding a ``webhook-id`` (what a receiver logs) finds that delivery: the body search
    never matched it. The other filters and the asker's sets still apply."""
    found = store.delivery_id_by_webhook_id(tx, webhook_id)
    if found is None or (before_id is not None and found >= before_id):
        return []
    rows = store.list_deliveries(tx, replace(wanted, q=None), limit=1, before_id=found + 1)
    return rows if rows and rows[0].id == found else []


def check_event(text: str, name: str = "event_id") -> str:
    """An event filter's text, stripped: an evt_ uid or an internal id (a 422 naming ``name``)."""
    text = text.strip()
    if text.isascii() and text.isdigit():  # "²" and Arabic-Indic digits are digits to isdigit
        return text
    if text.startswith("evt_") and 5 <= len(text) <= 40:
        return text
    raise field_error(name, "an event id as receivers get it, e.g. evt_01J9ZQ4T5V6W7X8Y9Z0A1B2C3D")


def _event_of(tx: Tx, text: str) -> EventRecord | None:
    """The event a Hub filter names, by its evt_ uid or its internal id."""
    text = check_event(text)
    if text.startswith("evt_"):
        return event_store.get_event_by_uid(tx, text)
    number = int(text)
    if number > ids.MAX_BIG_ID:  # beyond the column: a 500 from the driver
        return None
    return event_store.get_event(tx, number)


def _visible(delivery: DeliveryRecord | None, set_ids: frozenset[int] | None) -> bool:
    if delivery is None:
        return False
    return set_ids is None or (delivery.set_id is not None and delivery.set_id in set_ids)


def delivery_detail(
    ctx: AppContext, delivery_id: int, *, set_ids: frozenset[int] | None = None
) -> DeliveryDetail:
    with ctx.db.reading() as tx:
        found = store.get_delivery(tx, delivery_id)
        if found is None or not _visible(found[0], set_ids):
            raise NotFound(f"No delivery {delivery_id}")
        tries = store.list_attempts(tx, delivery_id)
        delivery, body = found
        endpoint = endpoint_store.get(tx, delivery.endpoint)
        paused = workflow_store.signal_paused_reason(tx, delivery.signal_id) if delivery.signal_id else None
        unfinished = delivery.status in queue.UNFINISHED
        waits_for = queue.ordered_predecessor(tx, delivery_id) if unfinished else None
    tries = [replace(a, request_headers=credentials.redacted(a.request_headers)) for a in tries]
    # The request as last sent (headers come from the newest attempt; none before the first try).
    headers = tries[-1].request_headers if tries else {}
    why = hints.waiting(
        status=delivery.status,
        now=utcnow(),
        next_attempt_at=delivery.next_attempt_at,
        lease_expires_at=delivery.lease_expires_at,
        origin=delivery.endpoint,
        endpoint_paused=endpoint is not None and endpoint.paused,
        throttled_until=endpoint.throttled_until if endpoint else None,
        circuit_state=endpoint.circuit_state if endpoint else "closed",
        signal_paused=paused,
        waits_for=waits_for,
    )
    return DeliveryDetail(delivery, body, headers, tries, why)


# --- changes -------------------------------------------------------------------------------------


def redeliver(
    ctx: AppContext, delivery_id: int, *, actor: str, set_ids: frozenset[int] | None = None
) -> DeliveryRecord:
    """Due now with the same body and webhook-id; the next attempt is marked manual."""
    now = utcnow()
    with ctx.db.transaction() as tx:
        current = _movable(tx, delivery_id, set_ids, REDELIVERABLE, "redelivered", now)
        if not store.is_sendable(tx, delivery_id):
            why = "it was a send test" if current.is_test else "its signal was removed from the workflow"
            raise Conflict(f"Delivery {delivery_id} cannot be redelivered: {why}")
        done = store.requeue(tx, delivery_id, from_statuses=REDELIVERABLE, now=now, trigger="manual")
        if done is None:
            raise _changed_meanwhile(delivery_id)
        if _follow_signal_urls(tx, [delivery_id], now):
            moved = store.get_delivery(tx, delivery_id)
            assert moved is not None  # written in this transaction
            done = moved[0]
        audit.record(tx, actor, "delivery.redeliver", "delivery", delivery_id, {"was": current.status})
    logger.info("redelivery queued", extra={"action": "delivery_redeliver", "delivery_id": delivery_id})
    return done


def _follow_signal_urls(tx: Tx, delivery_ids: list[int], now: datetime) -> int:
    """Queued again: sent where the signal sends now (its URL may have been fixed since)."""
    if not delivery_ids:
        return 0
    moved = 0
    grouped = delivery_store.by_signal(tx, delivery_ids)
    for signal_id, signal in queue.send_signals(tx, grouped).items():
        url = signal.config.get("url")
        if isinstance(url, str):
            moved += delivery_store.follow_url(tx, url, origin_of(url), now, ids=grouped[signal_id])
    return moved


def _movable(
    tx: Tx,
    delivery_id: int,
    set_ids: frozenset[int] | None,
    allowed: tuple[str, ...],
    verb: str,
    now: datetime,
) -> DeliveryRecord:
    """The delivery, when the asker sees it and it may be ``verb`` now; NotFound or Conflict else."""
    found = store.get_delivery(tx, delivery_id)
    current = found[0] if found else None
    if current is None or not _visible(current, set_ids):
        raise NotFound(f"No delivery {delivery_id}")
    _check_movable(current, allowed, verb, now)
    return current


def _changed_meanwhile(delivery_id: int) -> Conflict:
    return Conflict(f"Delivery {delivery_id} changed meanwhile; reload it and try again")


def _check_movable(delivery: DeliveryRecord, allowed: tuple[str, ...], verb: str, now: datetime) -> None:
    if delivery.status not in allowed:
        reasons = {
            "pending": "it is already queued",
            "cancelled": "it was cancelled; replay it with status=cancelled to send it again",
            "held": "it waits for its endpoint's circuit to close or for an earlier delivery",
            "succeeded": "it was already delivered",
            "failed": "it has already failed",
            "retrying": "it is already queued for a retry",
        }
        raise Conflict(
            f"Delivery {delivery.id} is {delivery.status} and cannot be {verb}: {reasons[delivery.status]}"
        )
    if delivery.lease_expires_at is not None and delivery.lease_expires_at > now:
        raise Conflict(f"Delivery {delivery.id} is being sent right now; try again in a moment")


def cancel(
    ctx: AppContext, delivery_id: int, *, actor: str, set_ids: frozenset[int] | None = None
) -> DeliveryRecord:
    now = utcnow()
    with ctx.db.transaction() as tx:
        current = _movable(tx, delivery_id, set_ids, CANCELLABLE, "cancelled", now)
        done = store.cancel(tx, delivery_id, from_statuses=CANCELLABLE, now=now)
        if done is None:
            raise _changed_meanwhile(delivery_id)
        audit.record(tx, actor, "delivery.cancel", "delivery", delivery_id, {"was": current.status})
    return done


def _replay_filter(tx: Tx, filters: Filters, set_ids: frozenset[int] | None) -> DeliveryFilter:
    """The store's filter of a replay; at least one real filter (a blank text search is none: it
    replayed everything), and an event filter that names an event qhook has."""
    if filters.q is not None and not filters.q.strip():
        filters = replace(filters, q=None)
    if filters.status is not None and not filters.status.replace(",", "").strip():
        filters = replace(filters, status=None)  # "" or ",": no filter (it replayed every failed one)
    if filters.is_empty():
        raise ValidationFailed(
            "Give at least one filter (status, workflow_id, set_id, result_id, action, endpoint, since,"
            " until, q) to replay",
            details=[{"field": "filters", "error": "at least one filter"}],
        )
    statuses = tuple(dict.fromkeys(s.strip() for s in (filters.status or "").split(",") if s.strip()))
    if any(status not in REPLAYABLE for status in statuses):
        raise field_error(
            "status",
            f"one or more of {', '.join(REPLAYABLE)}, comma-separated (queued deliveries are not replayed)",
        )
    wanted = replace(to_store(replace(filters, status=None), set_ids), statuses=statuses)
    if filters.event is not None:
        # The event filter was dropped here: `qhook replay --event X` replayed every delivery.
        event = _event_of(tx, filters.event)
        if event is None:
            raise field_error("event", f"an event qhook has; there is none with id {filters.event.strip()}")
        wanted = replace(wanted, event_id=event.id)
    return replace(wanted, statuses=wanted.statuses or REPLAY_DEFAULT)


def count_replayable(ctx: AppContext, filters: Filters, *, set_ids: frozenset[int] | None = None) -> int:
    with ctx.db.reading() as tx:
        return store.count_replayable(tx, _replay_filter(tx, filters, set_ids))


def replay(
    ctx: AppContext,
    filters: Filters,
    *,
    actor: str,
    set_ids: frozenset[int] | None = None,
    batch: int = 500,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Queue every finished delivery matching ``filters`` again, in batches of short transactions.

    Only finished rows (failed, succeeded; cancelled when asked) move, so a second call while the
    first one's deliveries are still queued finds nothing to queue. Send tests and deliveries of
    removed signals never move (see ``store.hub.sendable``).
    """
    with ctx.db.reading() as tx:
        wanted = _replay_filter(tx, filters, set_ids)
    queued = 0
    while True:
        now = utcnow()
        with ctx.db.transaction() as tx:
            moved = store.requeue_batch(tx, wanted, now=now, trigger="replay", batch=batch)
            _follow_signal_urls(tx, moved, now)
            if moved:
                audit.record(
                    tx,
                    actor,
                    "delivery.replay",
                    "delivery",
                    None,
                    {"filters": _described(filters), "queued": len(moved), "first": moved[0]},
                )
        queued += len(moved)
        if on_progress is not None and moved:
            on_progress(len(moved))
        if len(moved) < batch:
            break
    if queued == 0:
        with ctx.db.transaction() as tx:
            audit.record(
                tx, actor, "delivery.replay", "delivery", None, {"filters": _described(filters), "queued": 0}
            )
    logger.info("replay queued", extra={"action": "delivery_replay", "queued": queued})
    return queued


def _described(filters: Filters) -> dict[str, object]:
    shown: dict[str, object] = {}
    for name in filters.__dataclass_fields__:
        value = getattr(filters, name)
        if value is not None:
            shown[name] = value.isoformat() if isinstance(value, datetime) else value
    return shown


# --- endpoints -----------------------------------------------------------------------------------


def _state(row: EndpointRecord | None, now: datetime) -> str:
    if row is None:
        return "ok"
    if row.paused:
        return "paused"
    if row.circuit_state != "closed":
        return "circuit_open"
    if row.throttled_until is not None and row.throttled_until > now:
        return "throttled"
    return "ok"


def endpoint_summaries(
    ctx: AppContext, now: datetime | None = None, *, set_ids: frozenset[int] | None = None
) -> list[EndpointSummary]:
    """Every origin that is configured, queued or tried in the last day.

    For a user limited to some sets (``set_ids``) the numbers count only their sets' deliveries,
    and only origins those deliveries go to are listed.
    """
    now = now or utcnow()
    with ctx.db.reading() as tx:
        rows = {r.origin: r for r in store.list_endpoint_rows(tx)}
        depths = store.queue_depths(tx, set_ids)
        day = hub_stats.latency_by_endpoint(tx, now - timedelta(days=1), now, set_ids)
        hour = hub_stats.latency_by_endpoint(tx, now - timedelta(hours=1), now, set_ids)
        last_ok = hub_stats.last_ok_by_endpoint(tx, now - timedelta(hours=1), now, set_ids)
        opened = endpoint_store.opened_at(tx, [o for o, r in rows.items() if r.circuit_state != "closed"])
    shown = set(depths) | set(day)
    if set_ids is None:
        shown |= set(rows)
    found = []
    for origin in sorted(shown):
        row = rows.get(origin)
        state = _state(row, now)
        found.append(
            EndpointSummary(
                origin=origin,
                state=state,
                paused=bool(row and row.paused),
                throttled_until=row.throttled_until if row and state == "throttled" else None,
                circuit_open_since=(
                    opened.get(origin, row.circuit_opened_at)
                    if row and row.circuit_state != "closed"
                    else None
                ),
                last_hour=hour.get(origin, EMPTY_LATENCY),
                last_day=day.get(origin, EMPTY_LATENCY),
                queue_depth=depths.get(origin, 0),
                rate_limit=row.rate_limit if row else None,
                max_in_flight=row.max_in_flight if row else None,
                last_ok=last_ok.get(origin),
            )
        )
    return found


def _serves_sets(tx: Tx, origin: str, set_ids: frozenset[int] | None) -> bool:
    """Whether a user limited to ``set_ids`` may see or steer ``origin``: some delivery of their
    sets goes there (an endpoint is shared by every set sending to it, so it is all or nothing)."""
    if set_ids is None:
        return True
    wanted = DeliveryFilter(endpoint=origin, set_ids=set_ids)
    return bool(store.list_deliveries(tx, wanted, limit=1))


def _check_known(tx: Tx, origin: str) -> None:
    # A typo in the origin looked like a successful pause, and its row stayed for good.
    if not store.is_known_origin(tx, origin):
        raise NotFound(
            f"No endpoint {origin}: no delivery and no active webhook signal goes there "
            "(check the scheme, host and port)"
        )


def _check_steerable(tx: Tx, origin: str, set_ids: frozenset[int] | None) -> None:
    """Pausing and limits act on every set's traffic to the origin: a user limited to some sets
    steers it only while it serves their sets alone (sending one delivery there by hand made any
    shared endpoint theirs to pause)."""
    if not _serves_sets(tx, origin, set_ids):
        raise Forbidden(f"No permission for endpoint {origin}: no delivery of your sets goes there")
    if set_ids is not None and store.serves_other_sets(tx, origin, set_ids):
        raise Forbidden(
            f"No permission for endpoint {origin}: other sets' deliveries go there too; "
            "an admin of every set steers it"
        )


def set_endpoint_paused(
    ctx: AppContext, origin: str, *, paused: bool, actor: str, set_ids: frozenset[int] | None = None
) -> EndpointRecord:
    """Pause stops new attempts to the origin (in-flight ones finish); resume lets them go.
    A user limited to some sets may only steer origins their sets' deliveries go to."""
    key = _origin(origin, "origin")
    with ctx.db.transaction() as tx:
        _check_steerable(tx, key, set_ids)
        _check_known(tx, key)
        row = store.set_paused(tx, key, paused=paused, now=utcnow(), detail=f"by {actor}")
        audit.record(tx, actor, "endpoint.pause" if paused else "endpoint.resume", "endpoint", key, None)
    if not paused:
        ctx.wake()  # what waited may go now
    return row


def probe_endpoint(
    ctx: AppContext, origin: str, *, actor: str, set_ids: frozenset[int] | None = None
) -> EndpointRecord:
    """Probe an open circuit now instead of after the cool-off (the receiver was fixed): one held
    delivery goes; if it succeeds the circuit closes and the rest follow. 409 unless open."""
    key = _origin(origin, "origin")
    with ctx.db.transaction() as tx:
        _check_steerable(tx, key, set_ids)
        _check_known(tx, key)
        if not endpoint_store.request_probe(tx, key, utcnow(), f"by {actor}"):
            row = store.endpoint_row(tx, key)
            probing = row is not None and row.circuit_state == "half_open"
            state = "half_open: a probe is on its way" if probing else "closed"
            raise Conflict(f"The circuit of {key} is not open ({state}); there is nothing to probe")
        audit.record(tx, actor, "endpoint.probe", "endpoint", key, None)
        row = store.endpoint_row(tx, key)
    assert row is not None
    ctx.wake()
    return row


MAX_IN_FLIGHT_LIMIT = 100


def set_endpoint_limits(
    ctx: AppContext,
    origin: str,
    *,
    rate_limit: str | None,
    max_in_flight: int | None,
    actor: str,
    set_ids: frozenset[int] | None = None,
) -> EndpointRecord:
    """Per-host rate limit and concurrency cap (null: the signals' own); they win over the signals'."""
    key = _origin(origin, "origin")
    rate = str(parse_rate(rate_limit, "rate_limit")) if rate_limit is not None else None
    if max_in_flight is not None and not 1 <= max_in_flight <= MAX_IN_FLIGHT_LIMIT:
        raise field_error("max_in_flight", f"between 1 and {MAX_IN_FLIGHT_LIMIT}, or null")
    with ctx.db.transaction() as tx:
        _check_steerable(tx, key, set_ids)
        endpoint_store.set_limits(tx, key, rate_limit=rate, max_in_flight=max_in_flight, now=utcnow())
        audit.record(
            tx,
            actor,
            "endpoint.limits",
            "endpoint",
            key,
            {"rate_limit": rate, "max_in_flight": max_in_flight},
        )
        row = store.endpoint_row(tx, key)
    assert row is not None
    return row


def endpoint_log(
    ctx: AppContext,
    origin: str,
    *,
    limit: int = 50,
    cursor: str | None = None,
    set_ids: frozenset[int] | None = None,
) -> tuple[list[EndpointLogEntry], str | None]:
    """An endpoint's history (circuit opened/closed, throttled, paused/resumed, limits), newest first.

    A user limited to some sets sees the history only of origins their sets' deliveries go to;
    for any other the page is empty, as for an origin never used (so nothing tells them apart).
    """
    key = _origin(origin, "origin")
    if not 1 <= limit <= MAX_LIMIT:
        raise field_error("limit", f"between 1 and {MAX_LIMIT}")
    before_id = ids.read_cursor(cursor)
    with ctx.db.reading() as tx:
        if not _serves_sets(tx, key, set_ids):
            return [], None
        rows = endpoint_store.log_entries(tx, key, limit=limit + 1, before_id=before_id)
    return ids.cut_page(rows, limit)


def recent_endpoint_log(
    ctx: AppContext, origins: list[str], per_origin: int = 5
) -> dict[str, list[EndpointLogEntry]]:
    """The last few entries of each origin, for the endpoints page."""
    with ctx.db.reading() as tx:
        return {o: endpoint_store.log_entries(tx, o, limit=per_origin) for o in origins}


# --- stats ---------------------------------------------------------------------------------------


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def stats(
    ctx: AppContext,
    since: datetime | None = None,
    now: datetime | None = None,
    *,
    set_ids: frozenset[int] | None = None,
) -> Stats:
    """Per UTC hour from ``since`` (default: 24 hours ago): deliveries by status, attempt latency;
    with ``set_ids`` (a user's restriction) only deliveries of those sets count."""
    now = now or utcnow()
    since = _utc(since, "since") or now - timedelta(hours=24)
    if since < now - timedelta(days=MAX_STATS_DAYS):
        raise field_error("since", f"within the last {MAX_STATS_DAYS} days")
    if since >= now:
        raise field_error("since", "a time in the past")
    start = _hour(since)
    with ctx.db.reading() as tx:
        counts = hub_stats.deliveries_by_hour(tx, start, now, set_ids)
        latency = hub_stats.latency_by_hour(tx, start, now, set_ids)
    hours = []
    moment = start
    while moment <= now:
        by_status = {s: counts.get((moment, s), 0) for s in store.STATUSES}
        hours.append(HourStats(moment, by_status, latency.get(moment, EMPTY_LATENCY)))
        moment += timedelta(hours=1)
    return Stats(since=start, until=now, hours=hours)


# --- retention -----------------------------------------------------------------------------------


def _retention(ctx: AppContext, now: datetime) -> list[tuple[str, datetime]]:
    """Which finished statuses go after how long; failed ones stay longer so people can act on them."""
    settings = ctx.settings
    return [
        ("succeeded", now - timedelta(days=settings.retention_days)),
        ("cancelled", now - timedelta(days=settings.retention_days)),
        ("failed", now - timedelta(days=settings.failed_retention_days)),
    ]


def purge(
    ctx: AppContext, now: datetime | None = None, dry_run: bool = False, batch: int = 500
) -> PurgeReport:
    """Delete deliveries (and their attempts) past retention in small transactions; dry-run counts."""
    now = now or utcnow()
    removed: dict[str, int] = {}
    removed_attempts = 0
    for status, cutoff in _retention(ctx, now):
        if dry_run:
            with ctx.db.reading() as tx:
                rows, tries = store.count_purgeable(tx, status, cutoff)
            removed[status], removed_attempts = rows, removed_attempts + tries
            continue
        removed[status] = 0
        while True:
            with ctx.db.transaction() as tx:
                rows, tries = store.purge_batch(tx, status, cutoff, batch=batch)
            removed[status] += rows
            removed_attempts += tries
            if rows < batch:
                break
    records = _purge_records(ctx, now, dry_run, batch)
    report = PurgeReport(dry_run=dry_run, deliveries=removed, attempts=removed_attempts, records=records)
    if (report.total or any(records.values())) and not dry_run:
        logger.info(
            "purged %d deliveries and %d attempts past retention",
            report.total,
            report.attempts,
            extra={
                "action": "hub_purge",
                "deliveries": report.total,
                "attempts": report.attempts,
                **{name.replace(" ", "_"): n for name, n in records.items() if n},
            },
        )
    return report


# Rate counters: every window is an hour at most; a day later none can matter.
SPENT_COUNTERS_AFTER = timedelta(days=1)


def _purge_records(ctx: AppContext, now: datetime, dry_run: bool, batch: int) -> dict[str, int]:
    """The endpoint log, error reports and e-mails (sent or not) go after QHOOK_FAILED_RETENTION_DAYS
    (the longest retention: they explain the failed deliveries still kept); spent rate counters
    after a day. The audit trail and the events stay."""
    before = now - timedelta(days=ctx.settings.failed_retention_days)
    kept = retention.Kept(
        log_before=before,
        done_before=before,
        counters_before_ms=int((now - SPENT_COUNTERS_AFTER).timestamp() * 1000),
    )
    if dry_run:
        with ctx.db.reading() as tx:
            return retention.count(tx, kept)
    total: dict[str, int] = {}
    while True:
        with ctx.db.transaction() as tx:
            done = retention.purge_batch(tx, kept, batch)
        for name, n in done.items():
            total[name] = total.get(name, 0) + n
        if all(n < batch for n in done.values()):
            return total


async def run_retention(ctx: AppContext, stop: asyncio.Event) -> None:
    """Purge every ``QHOOK_RETENTION_INTERVAL_S`` until ``stop`` is set; never raises."""
    await background.repeat(
        lambda: purge(ctx),
        stop,
        interval_s=ctx.settings.retention_interval_s,
        logger=logger,
        failure="purge failed",
        action="hub_purge_failed",
    )


# Lifespan hook for ``qhook serve``: purge beside the API, stop on shutdown.
start_retention_in_app = background.in_app(run_retention, name="qhook-retention")
