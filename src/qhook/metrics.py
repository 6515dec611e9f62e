"""Prometheus metrics: counters and histograms kept by the worker, gauges read from the database."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.metrics_core import Metric

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.errors import QhookError
from qhook.store import email_outbox, queue
from qhook.store import endpoints as endpoint_store

logger = logging.getLogger(__name__)
REGISTRY = CollectorRegistry(auto_describe=True)

DELIVERIES = Counter(
    "qhook_deliveries",
    "Finished delivery attempts by outcome (succeeded, retrying, failed).",
    ["outcome"],
    registry=REGISTRY,
)
ATTEMPT_SECONDS = Histogram(
    "qhook_attempt_duration_seconds",
    "Duration of one HTTP attempt.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
EVENT_TO_DELIVERY_SECONDS = Histogram(
    "qhook_event_to_delivery_seconds",
    "From the event's commit to the receiver's 2xx.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "qhook_queue_depth", "Deliveries by status (read from the database).", ["status"], registry=REGISTRY
)
OPEN_CIRCUITS = Gauge(
    "qhook_open_circuits", "Endpoints whose circuit is open or half-open.", registry=REGISTRY
)
WAITING_ENDPOINTS = Gauge(
    "qhook_waiting_endpoints",
    "Endpoints paused by an operator (reason=paused) or by a receiver's Retry-After (reason=throttled).",
    ["reason"],
    registry=REGISTRY,
)
EMAILS = Gauge(
    "qhook_emails",
    "E-mails of e-mail signals by status (pending, failed; sent ones are not counted).",
    ["status"],
    registry=REGISTRY,
)
DATABASE_UP = Gauge(
    "qhook_database_up",
    "1 when the last scrape read the database gauges, 0 when the database was away (they are then absent).",
    registry=REGISTRY,
)
OLDEST_DUE = Gauge(
    "qhook_oldest_due_seconds",
    "How long the oldest due pending or retrying delivery has waited past its due time (0: none"
    " waits); it grows while no worker sends, or while a paused signal or endpoint holds it.",
    registry=REGISTRY,
)
STATUSES = ("pending", "retrying", "held", "succeeded", "failed", "cancelled")


def refresh_gauges(ctx: AppContext) -> None:
    """Read the database-backed gauges now (blocking)."""
    now = utcnow()
    with ctx.db.reading() as tx:
        depth = queue.depth_by_status(tx)
        open_count = endpoint_store.open_circuit_count(tx)
        waiting = endpoint_store.waiting_counts(tx, now)
        mails = email_outbox.count_by_status(tx, ("pending", "failed"))
        oldest = queue.oldest_due(tx, now)
    OLDEST_DUE.set(max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0)
    for status in sorted(set(STATUSES) | set(depth)):
        QUEUE_DEPTH.labels(status).set(depth.get(status, 0))
    OPEN_CIRCUITS.set(open_count)
    for reason, count in waiting.items():
        WAITING_ENDPOINTS.labels(reason).set(count)
    for status in ("pending", "failed"):
        EMAILS.labels(status).set(mails.get(status, 0))
    DATABASE_UP.set(1)


def render(ctx: AppContext) -> bytes:
    """The exposition text; database-backed gauges are read now (blocking: call from a thread).
    With the database away it still answers: serve's /metrics answered 503, so the scrape failed
    and ``qhook_database_up == 0`` could never be seen for serve processes."""
    _refresh_or_mark_down(ctx)
    return generate_latest(REGISTRY)


def _refresh_or_mark_down(ctx: AppContext) -> None:
    try:
        refresh_gauges(ctx)
    except Exception as exc:  # the database is away: counters and histograms still answer
        why = exc.for_operators if isinstance(exc, QhookError) else f"{type(exc).__name__}: {exc}"
        logger.warning("metrics gauges not refreshed: %s", why, extra={"action": "metrics_gauges_failed"})
        # The last values would pass for current ones (a queue that looks calm during an
        # outage): the database gauges go absent, and qhook_database_up says why.
        DATABASE_UP.set(0)
        QUEUE_DEPTH.clear()
        WAITING_ENDPOINTS.clear()
        EMAILS.clear()
        OPEN_CIRCUITS.set(float("nan"))
        OLDEST_DUE.set(float("nan"))


class _ScrapeRegistry(CollectorRegistry):
    """The worker's metrics server: REGISTRY, with the database gauges read at each scrape."""

    def __init__(self, ctx: AppContext) -> None:
        super().__init__(auto_describe=True)
        self._ctx = ctx

    def collect(self) -> Iterator[Metric]:
        _refresh_or_mark_down(self._ctx)
        yield from REGISTRY.collect()


def serve_http(ctx: AppContext, port: int, host: str = "127.0.0.1") -> Callable[[], None]:
    """Serve ``/metrics`` from a thread (``qhook worker --metrics-port``); returns a stop function."""
    server, thread = start_http_server(port, addr=host, registry=_ScrapeRegistry(ctx))
    logger.info("metrics on http://%s:%s/metrics", host, port, extra={"action": "metrics_start"})

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
