"""The request inspector: bins people point webhooks at, captures, scripted answers, signature checks."""

from __future__ import annotations

import asyncio
import binascii
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError, WebhookVerificationError

from qhook import background
from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.domain import inspector as domain
from qhook.domain.access import Principal
from qhook.domain.inspector import Answer
from qhook.errors import Forbidden, NotFound, QhookError
from qhook.services import audit
from qhook.store import inspector as store
from qhook.store.db import Tx
from qhook.store.inspector import BinRecord, CaptureRecord

logger = logging.getLogger("qhook.inspector")


@dataclass(frozen=True, slots=True)
class BinInfo:
    bin: BinRecord
    captures: int


def _not_found(bin_id: str) -> NotFound:
    return NotFound(f"No inspector bin {bin_id!r}: it never existed, expired or was deleted")


def create_bin(
    ctx: AppContext,
    *,
    responses: object = None,
    ttl_days: object = None,
    max_captures: object = None,
    secret: object = None,
    actor: str,
) -> BinRecord:
    options = domain.parse_bin_options(responses, ttl_days, max_captures, secret)
    now = utcnow()
    secret_enc = ctx.box.encrypt(options.secret) if options.secret else None
    with ctx.db.transaction() as tx:
        record = store.insert_bin(
            tx,
            bin_id=secrets.token_urlsafe(16),
            now=now,
            expires_at=now + timedelta(days=options.ttl_days),
            responses=domain.steps_to_json(options.steps),
            max_captures=options.max_captures,
            secret_enc=secret_enc,
            created_by=actor,
        )
        details = {
            "ttl_days": options.ttl_days,
            "max_captures": options.max_captures,
            "has_secret": secret_enc is not None,
            "responses": record.responses,
        }
        audit.record(tx, actor, "inspector_bin.create", "inspector_bin", record.id, details)
    return record


def bins_of(ctx: AppContext, maker: str) -> list[BinRecord]:
    """The live bins ``maker`` made, newest first: a bin id not written down is found again."""
    with ctx.db.reading() as tx:
        return store.bins_made_by(tx, maker, utcnow())


def only_maker(principal: Principal) -> str | None:
    """A user limited to some sets reads only the bins they made (any set may post into a bin)."""
    return principal.name if principal.set_ids is not None else None


def _readable(tx: Tx, bin_id: str, only_maker: str | None) -> BinRecord:
    """The live bin; with ``only_maker`` (a user limited to some sets) only a bin they made.

    Any set's workflow may post into a bin, so its captures can hold other sets' results: a user
    limited to one plant's sets read another plant's batches through a bin id. To them another's
    bin does not exist (404, as a delivery of another set)."""
    record = store.live_bin(tx, bin_id, utcnow())
    if record is None or (only_maker is not None and record.created_by != only_maker):
        raise _not_found(bin_id)
    return record


def get_bin(ctx: AppContext, bin_id: str, *, only_maker: str | None = None) -> BinInfo:
    with ctx.db.reading() as tx:
        record = _readable(tx, bin_id, only_maker)
        return BinInfo(record, store.count_captures(tx, bin_id))


def list_captures(
    ctx: AppContext,
    bin_id: str,
    *,
    limit: int = 100,
    before_id: int | None = None,
    only_maker: str | None = None,
) -> list[CaptureRecord]:
    with ctx.db.reading() as tx:
        _readable(tx, bin_id, only_maker)
        return store.list_captures(tx, bin_id, limit=limit, before_id=before_id)


def may_steer_any(principal: Principal) -> bool:
    """Whether ``principal`` may change or delete bins others made: an admin of every set (an
    admin limited to some sets cannot even read them)."""
    return principal.has_role("admin") and principal.set_ids is None


def _check_owner(tx: Tx, bin_id: str, actor: str, any_bin: bool, only_maker: str | None = None) -> None:
    """A bin is changed or deleted by the one who made it, or by an admin of every set
    (``any_bin``); to a user limited to some sets another's bin does not exist (404)."""
    record = _readable(tx, bin_id, only_maker)
    if not any_bin and record.created_by is not None and record.created_by != actor:
        raise Forbidden(
            f"Inspector bin {bin_id} is {record.created_by}'s: only they or an admin may change it"
        )


def set_responses(
    ctx: AppContext,
    bin_id: str,
    responses: object,
    *,
    actor: str,
    any_bin: bool = False,
    only_maker: str | None = None,
) -> BinRecord:
    steps = domain.parse_responses(responses)
    with ctx.db.transaction() as tx:
        _check_owner(tx, bin_id, actor, any_bin, only_maker)
        record = store.set_responses(tx, bin_id, domain.steps_to_json(steps), utcnow())
        if record is None:
            raise _not_found(bin_id)
        audit.record(
            tx, actor, "inspector_bin.responses", "inspector_bin", bin_id, {"responses": record.responses}
        )
    return record


def delete_bin(
    ctx: AppContext, bin_id: str, *, actor: str, any_bin: bool = False, only_maker: str | None = None
) -> None:
    with ctx.db.transaction() as tx:
        _check_owner(tx, bin_id, actor, any_bin, only_maker)
        if not store.delete_bin(tx, bin_id):
            raise _not_found(bin_id)
        audit.record(tx, actor, "inspector_bin.delete", "inspector_bin", bin_id, None)


def purge_expired(ctx: AppContext, now: datetime) -> int:
    """Delete expired bins and their captures; the scheduler calls this now and then."""
    with ctx.db.transaction() as tx:
        purged = store.delete_expired(tx, now)
    if purged:
        logger.info("purged inspector bins", extra={"action": "inspector_purge", "bins": purged})
    return purged


async def run_purge(ctx: AppContext, stop: asyncio.Event, interval_s: float | None = None) -> None:
    """Purge expired bins every ``interval_s`` (default QHOOK_RETENTION_INTERVAL_S) until ``stop``."""
    await background.repeat(
        lambda: purge_expired(ctx, utcnow()),
        stop,
        interval_s=ctx.settings.retention_interval_s if interval_s is None else interval_s,
        logger=logger,
        failure="inspector purge failed",
        action="inspector_purge_failed",
    )


# Lifespan hook for ``qhook serve``: expired bins go beside the API; stops on shutdown.
start_purge_in_app = background.in_app(run_purge, name="qhook-inspector-purge")


def capture(
    ctx: AppContext,
    bin_id: str,
    *,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    source: str,
    now: datetime,
) -> Answer:
    """Record one request to a bin and decide the answer, in one transaction.

    The signature is checked now, while the Standard Webhooks timestamp is within the library's
    five-minute tolerance; checking it when someone looks days later would call every old capture
    invalid.
    """
    if not domain.is_bin_id(bin_id):
        raise _not_found(bin_id)
    with ctx.db.transaction() as tx:
        record = store.take_capture_number(tx, bin_id, now)
        if record is None:
            raise _not_found(bin_id)
        answer = domain.answer_for(domain.steps_from_json(record.responses), record.capture_count)
        signature = _signature_verdict(tx, ctx, record, headers, body, now)
        store.insert_capture(
            tx,
            bin_id=bin_id,
            at=now,
            method=method,
            path=path,
            query=query,
            headers=headers,
            body=body,
            source=source,
            status=answer.status,
            signature=signature,
        )
        store.drop_oldest(tx, bin_id, record.max_captures)
    return answer


def _signature_verdict(
    tx: Tx, ctx: AppContext, record: BinRecord, headers: dict[str, str], body: bytes, now: datetime
) -> str:
    if "webhook-signature" not in headers:
        return domain.SIGNATURE_UNSIGNED
    candidates = _candidate_secrets(tx, ctx, record, headers.get("webhook-id"), now)
    if not candidates:
        return domain.SIGNATURE_NO_SECRET
    for secret in candidates:
        if _verifies(secret, body, headers):
            return domain.SIGNATURE_VALID
    return domain.SIGNATURE_INVALID


def _candidate_secrets(
    tx: Tx, ctx: AppContext, record: BinRecord, webhook_id: str | None, now: datetime
) -> list[str]:
    encrypted: list[str] = []
    if webhook_id:
        found = store.signal_secrets_for_webhook_id(tx, webhook_id)
        if found is not None:
            if found.secret_enc:
                encrypted.append(found.secret_enc)
            rotating = found.previous_secret_until is None or found.previous_secret_until > now
            if found.previous_secret_enc and rotating:
                encrypted.append(found.previous_secret_enc)
    if record.secret_enc:
        encrypted.append(record.secret_enc)
    plain: list[str] = []
    for token in encrypted:
        try:
            plain.append(ctx.box.decrypt(token))
        except QhookError:
            logger.warning("inspector secret unreadable", extra={"action": "inspector_secret_unreadable"})
    return plain


def _verifies(secret: str, body: bytes, headers: dict[str, Any]) -> bool:
    try:
        Webhook(secret).verify(body, headers, json_parse=False)
    except (WebhookVerificationError, EmptyWebhookSecretError, ValueError, binascii.Error):
        # ValueError covers malformed signature lists and bodies that are not UTF-8 text.
        return False
    return True
