"""Inspector bins and the requests they captured."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from qhook.store.db import Tx
from qhook.store.tables import deliveries, inspector_bins, inspector_requests, signals


@dataclass(frozen=True, slots=True)
class BinRecord:
    id: str
    created_at: datetime
    expires_at: datetime
    responses: Any  # the validated script as stored (list of step objects) or None
    max_captures: int
    secret_enc: str | None
    capture_count: int
    created_by: str | None = None


@dataclass(frozen=True, slots=True)
class CaptureRecord:
    id: int
    bin_id: str
    at: datetime
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    source: str
    status: int
    signature: str


@dataclass(frozen=True, slots=True)
class SignalSecrets:
    """The encrypted signing secrets of the signal a delivery belongs to."""

    secret_enc: str | None
    previous_secret_enc: str | None
    previous_secret_until: datetime | None


def _bin(row: Any) -> BinRecord:
    return BinRecord(
        row.id,
        row.created_at,
        row.expires_at,
        row.responses,
        row.max_captures,
        row.secret_enc,
        row.capture_count,
        row.created_by,
    )


def _capture(row: Any) -> CaptureRecord:
    return CaptureRecord(
        row.id,
        row.bin_id,
        row.at,
        row.method,
        row.path,
        row.query,
        dict(row.headers),
        bytes(row.body),
        row.source,
        row.status,
        row.signature,
    )


def insert_bin(
    tx: Tx,
    *,
    bin_id: str,
    now: datetime,
    expires_at: datetime,
    responses: Any,
    max_captures: int,
    secret_enc: str | None,
    created_by: str | None = None,
) -> BinRecord:
    row = tx.execute(
        insert(inspector_bins)
        .values(
            id=bin_id,
            created_at=now,
            expires_at=expires_at,
            responses=responses,
            max_captures=max_captures,
            secret_enc=secret_enc,
            capture_count=0,
            created_by=created_by,
        )
        .returning(inspector_bins)
    ).one()
    return _bin(row)


def live_bin(tx: Tx, bin_id: str, now: datetime) -> BinRecord | None:
    """The bin unless it is unknown or expired."""
    row = tx.execute(
        select(inspector_bins).where(inspector_bins.c.id == bin_id, inspector_bins.c.expires_at > now)
    ).one_or_none()
    return _bin(row) if row else None


def bins_made_by(tx: Tx, maker: str, now: datetime, limit: int = 100) -> list[BinRecord]:
    """The live bins ``maker`` made, newest first."""
    rows = tx.execute(
        select(inspector_bins)
        .where(inspector_bins.c.created_by == maker, inspector_bins.c.expires_at > now)
        .order_by(inspector_bins.c.created_at.desc())
        .limit(limit)
    )
    return [_bin(r) for r in rows]


def count_captures(tx: Tx, bin_id: str) -> int:
    query = select(func.count()).select_from(inspector_requests).where(inspector_requests.c.bin_id == bin_id)
    return int(tx.execute(query).scalar_one())


def take_capture_number(tx: Tx, bin_id: str, now: datetime) -> BinRecord | None:
    """Count one more capture on a live bin; the returned ``capture_count`` is this capture's number.

    The UPDATE locks the bin's row, so concurrent captures of one bin get distinct numbers.
    """
    row = tx.execute(
        update(inspector_bins)
        .where(inspector_bins.c.id == bin_id, inspector_bins.c.expires_at > now)
        .values(capture_count=inspector_bins.c.capture_count + 1)
        .returning(inspector_bins)
    ).one_or_none()
    return _bin(row) if row else None


def insert_capture(
    tx: Tx,
    *,
    bin_id: str,
    at: datetime,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    source: str,
    status: int,
    signature: str,
) -> CaptureRecord:
    row = tx.execute(
        insert(inspector_requests)
        .values(
            bin_id=bin_id,
            at=at,
            method=method[:10],
            path=path,
            query=query,
            headers=headers,
            body=body,
            source=source[:100],
            status=status,
            signature=signature,
        )
        .returning(inspector_requests)
    ).one()
    return _capture(row)


def drop_oldest(tx: Tx, bin_id: str, keep: int) -> int:
    """Delete all but the newest ``keep`` captures of a bin."""
    newest = (
        select(inspector_requests.c.id)
        .where(inspector_requests.c.bin_id == bin_id)
        .order_by(inspector_requests.c.id.desc())
        .limit(keep)
    )
    done = tx.execute(
        delete(inspector_requests).where(
            inspector_requests.c.bin_id == bin_id, inspector_requests.c.id.not_in(newest.scalar_subquery())
        )
    )
    return int(done.rowcount or 0)


def list_captures(tx: Tx, bin_id: str, *, limit: int, before_id: int | None = None) -> list[CaptureRecord]:
    """Newest first."""
    query = select(inspector_requests).where(inspector_requests.c.bin_id == bin_id)
    if before_id is not None:
        query = query.where(inspector_requests.c.id < before_id)
    query = query.order_by(inspector_requests.c.id.desc()).limit(limit)
    return [_capture(r) for r in tx.execute(query)]


def set_responses(tx: Tx, bin_id: str, responses: Any, now: datetime) -> BinRecord | None:
    """Replace a live bin's script and start counting again, so the new script runs from its first step."""
    row = tx.execute(
        update(inspector_bins)
        .where(inspector_bins.c.id == bin_id, inspector_bins.c.expires_at > now)
        .values(responses=responses, capture_count=0)
        .returning(inspector_bins)
    ).one_or_none()
    return _bin(row) if row else None


def delete_bin(tx: Tx, bin_id: str) -> bool:
    tx.execute(delete(inspector_requests).where(inspector_requests.c.bin_id == bin_id))
    done = tx.execute(delete(inspector_bins).where(inspector_bins.c.id == bin_id))
    return bool(done.rowcount)


def delete_expired(tx: Tx, now: datetime) -> int:
    """Delete bins past their expiry with their captures; returns the number of bins."""
    expired = select(inspector_bins.c.id).where(inspector_bins.c.expires_at <= now)
    tx.execute(delete(inspector_requests).where(inspector_requests.c.bin_id.in_(expired.scalar_subquery())))
    done = tx.execute(delete(inspector_bins).where(inspector_bins.c.expires_at <= now))
    return int(done.rowcount or 0)


def signal_secrets_for_webhook_id(tx: Tx, webhook_id: str) -> SignalSecrets | None:
    """The secrets of the signal whose delivery carries this ``webhook-id``, if any."""
    row = tx.execute(
        select(signals.c.secret_enc, signals.c.previous_secret_enc, signals.c.previous_secret_until)
        .join(deliveries, deliveries.c.signal_id == signals.c.id)
        .where(deliveries.c.webhook_id == webhook_id)
    ).one_or_none()
    if row is None:
        return None
    return SignalSecrets(row.secret_enc, row.previous_secret_enc, row.previous_secret_until)
