"""Prometheus metrics: counters and histograms kept by the worker, gauges read from the database."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from qhook.context import AppContext
from qhook.store import endpoints as endpoint_store
from qhook.store import queue

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
STATUSES = ("pending", "retrying", "held", "succeeded", "failed", "cancelled")


def render(ctx: AppContext) -> bytes:
    """The exposition text; database-backed gauges are read now (blocking: call from a thread)."""
    with ctx.db.reading() as tx:
        depth = queue.depth_by_status(tx)
        open_count = endpoint_store.open_circuit_count(tx)
    for status in sorted(set(STATUSES) | set(depth)):
        QUEUE_DEPTH.labels(status).set(depth.get(status, 0))
    OPEN_CIRCUITS.set(open_count)
    return generate_latest(REGISTRY)
