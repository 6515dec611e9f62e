"""Send test: one signal's body, signed and authenticated as a real delivery, sent now, logged as a test.

The body is built from sample values of the set's fields, or from a chosen result. The send goes
through the same ``delivery.attempt.perform`` the worker uses (auth profile, OAuth2 refresh on
401, signing, redaction, hints). It is never retried: the delivery row (``is_test`` true, attempt
trigger "test") is never in a status a worker claims.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.delivery import attempt as attempt_mod
from qhook.delivery.sender import Sender
from qhook.domain import payloads
from qhook.domain.fields import flat_result
from qhook.domain.ids import new_uid
from qhook.domain.samples import SAMPLE_RESULT_ID, sample_values
from qhook.domain.urls import origin_of
from qhook.errors import Conflict, NotFound, ValidationFailed, field_error
from qhook.services import audit
from qhook.store import deliveries as delivery_store
from qhook.store import queue
from qhook.store import results as result_store
from qhook.store import sets as set_store
from qhook.store import workflows as workflow_store

logger = logging.getLogger("qhook.send_test")

TEST_ACTION = "test"
TEST_TRIGGER = "test"
SENDING_HINT = "A send test was being sent and did not finish (the process stopped)."


@dataclass(frozen=True, slots=True)
class _Prepared:
    delivery: queue.QueuedDelivery
    signal: queue.SendSignal
    workflow_id: int
    set_id: int
    result_id: int | None


def _prepare(ctx: AppContext, workflow_id: int, signal_id: int, result_id: int | None) -> _Prepared:
    now = utcnow()
    with ctx.db.reading() as tx:
        workflow = workflow_store.get_workflow(tx, workflow_id)
        if workflow is None:
            raise NotFound(f"workflow {workflow_id}: no such workflow")
        record = next((s for s in workflow.signals if s.id == signal_id), None)
        if record is None:
            raise NotFound(f"signal {signal_id}: no such signal in workflow {workflow_id}")
        if record.type != "webhook":
            raise Conflict(f"signal {signal_id} is a {record.type} signal; only webhooks can be sent a test")
        current = set_store.get_set(tx, workflow.set_id)
        if current is None:
            raise NotFound(f"set {workflow.set_id} of workflow {workflow_id}: no such set")
        # The sample is a result as just entered, as saving checks the templates with it: a
        # template printing {{ result_version }} gives JSON for the test as for real events.
        version = 1
        if result_id is None:
            flat = flat_result(SAMPLE_RESULT_ID, now, sample_values(current.fields, now), current.fields)
        else:
            result = result_store.get_result(tx, workflow.set_id, result_id)
            if result is None:
                raise field_error(
                    "result_id", f"a result of set {workflow.set_id}; there is no result {result_id}"
                )
            flat = flat_result(result.id, result.date, result.values, current.fields)
            version = result.version
        signal = queue.send_signals(tx, [signal_id])[signal_id]
    context = payloads.build_context(
        flat,
        actor="test",
        action=TEST_ACTION,
        set_info={"id": current.id, "name": current.name},
        workflow={"id": workflow.id, "name": workflow.name},
        changes={},
        result_version=version,
    )
    try:
        body = payloads.render_body(
            signal.config, context, event_id=new_uid("evt", now), occurred_at=now, result_version=version
        )
    except payloads.PayloadError as exc:
        raise ValidationFailed(
            f"signal {signal_id}: the body cannot be built: {exc}",
            details=[{"field": "body_template", "error": str(exc)}],
        ) from exc
    url = str(signal.config["url"])
    delivery = queue.QueuedDelivery(
        id=0,  # set once the row is written
        webhook_id=new_uid("msg", now),
        event_id=None,
        workflow_id=workflow.id,
        signal_id=signal_id,
        set_id=workflow.set_id,
        result_id=result_id,
        action=TEST_ACTION,
        url=url,
        endpoint=origin_of(url),
        body=body,
        status="pending",
        attempt_count=0,
        next_attempt_at=now,
        ordered=False,
        order_key=None,
        is_test=True,
        created_at=now,
        next_trigger=TEST_TRIGGER,
    )
    return _Prepared(delivery, signal, workflow.id, workflow.set_id, result_id)


async def send_test(
    ctx: AppContext,
    workflow_id: int,
    signal_id: int,
    *,
    result_id: int | None = None,
    actor: str,
    sender: Sender | None = None,
) -> dict[str, Any]:
    """Send one test delivery now; the answer carries the attempt as the Hub shows it."""
    prepared = _prepare(ctx, workflow_id, signal_id, result_id)
    delivery = prepared.delivery
    with ctx.db.transaction() as tx:
        # Written before the send so the inspector can check the signature by webhook-id; finished
        # at once so no worker claims it (if this process dies mid-send it stays "failed").
        delivery_id = delivery_store.insert_delivery(
            tx,
            webhook_id=delivery.webhook_id,
            event_id=None,
            workflow_id=prepared.workflow_id,
            signal_id=signal_id,
            set_id=prepared.set_id,
            result_id=result_id,
            action=TEST_ACTION,
            url=delivery.url,
            endpoint=delivery.endpoint,
            body=delivery.body,
            ordered=False,
            now=delivery.created_at,
            is_test=True,
        )
        sending = queue.Finish(delivery_id, "failed", 0, None, None, None, SENDING_HINT, None)
        queue.record_outcomes(tx, [], [sending], now=delivery.created_at)
    own_sender = sender is None
    active = sender or Sender(ctx.settings)
    try:
        outcome = await attempt_mod.perform(
            ctx, active, replace(delivery, id=delivery_id), prepared.signal, once=True
        )
    finally:
        if own_sender:
            await active.close()
    succeeded = outcome.decision.outcome == "succeeded"
    hint = outcome.hint
    if not succeeded:
        # The hint speaks of deliveries, which are retried; a send test is not.
        hint = f"Send test, not retried. {hint or 'Not delivered; see the response and error.'}"
    finished = outcome.finished_at
    with ctx.db.transaction() as tx:
        row = replace(outcome.attempt, hint=hint)
        rows = [*outcome.earlier, row]
        finish = queue.Finish(
            delivery_id=delivery_id,
            status="succeeded" if succeeded else "failed",
            attempt_count=row.number,
            next_attempt_at=None,
            last_status_code=outcome.status_code,
            last_error_kind=outcome.error_kind,
            hint=hint,
            delivered_at=finished if succeeded else None,
        )
        queue.record_outcomes(tx, rows, [finish], now=finished)
        audit.record(
            tx,
            actor,
            "signal.test",
            "signal",
            signal_id,
            {"workflow_id": workflow_id, "delivery_id": delivery_id, "result_id": result_id},
        )
    logger.info(
        "test sent",
        extra={"action": "signal_test", "delivery_id": delivery_id, "status_code": outcome.status_code},
    )
    attempt = outcome.attempt
    return {
        "delivery_id": delivery_id,
        "webhook_id": delivery.webhook_id,
        "attempt": {
            "status_code": attempt.status_code,
            "response_headers": attempt.response_headers or {},
            "response_body": attempt.response_body or "",
            "duration_ms": attempt.duration_ms,
            "error_kind": attempt.error_kind,
            "error": attempt.error,
            "hint": hint,
        },
    }
