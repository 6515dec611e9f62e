"""What one attempt sends, built as plain data before any I/O: headers, signature, auth, body.

``webhook-id`` is the delivery's id, the same on every retry and redelivery; the timestamp and the
signature are made per attempt (receivers reject old timestamps). Auth headers win over the
signal's static headers; qhook's own headers win over both.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from qhook import __version__
from qhook.context import AppContext
from qhook.delivery.auth import ResolvedAuth
from qhook.delivery.sender import OutgoingRequest
from qhook.domain import credentials
from qhook.domain import headers as header_names
from qhook.domain.signing import signing_headers
from qhook.domain.urls import parse_target

USER_AGENT = f"qhook/{__version__}"
DEFAULT_TIMEOUT_S = 15.0
MAX_TIMEOUT_S = 60.0


class DeliveryLike(Protocol):
    @property
    def webhook_id(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def body(self) -> str: ...


class SignalLike(Protocol):
    @property
    def config(self) -> Mapping[str, Any]: ...
    @property
    def secret_enc(self) -> str | None: ...
    @property
    def previous_secret_enc(self) -> str | None: ...
    @property
    def previous_secret_until(self) -> datetime | None: ...


def timeout_of(config: Mapping[str, Any]) -> float:
    raw = config.get("timeout_s")
    value = DEFAULT_TIMEOUT_S if raw is None else float(raw)
    return min(max(value, 1.0), MAX_TIMEOUT_S)


def build_request(
    ctx: AppContext,
    delivery: DeliveryLike,
    signal: SignalLike,
    auth: ResolvedAuth | None,
    now: datetime,
) -> OutgoingRequest:
    """The request for one attempt of ``delivery`` (``auth`` from ``delivery.auth.resolve_auth``)."""
    url = delivery.url
    body = delivery.body.encode()
    headers: dict[str, str] = {}
    static = signal.config.get("headers")
    if static:
        for name, value in static.items():
            if not header_names.is_reserved(str(name)):
                headers[str(name)] = str(value)
    if "@" in url and "@" in url.split("://", 1)[-1].split("/", 1)[0]:
        # The original's https://user:pass@host form: the pair becomes Basic, never part of the URL.
        target = parse_target(url, allow_http=True)
        url = target.url
        if auth is None and target.username is not None:
            pair = f"{target.username}:{target.password or ''}".encode()
            _replace(headers, "Authorization", "Basic " + base64.b64encode(pair).decode())
    secret_names: frozenset[str] = frozenset()  # credential headers are added by ``redact``
    if auth is not None:
        for name, value in auth.headers.items():
            _replace(headers, name, value)
        secret_names = frozenset(auth.secret_header_names)
    headers["Content-Type"] = "application/json"
    headers["User-Agent"] = USER_AGENT
    timestamp = int(now.timestamp())
    if signal.secret_enc:
        previous = None
        if signal.previous_secret_enc and signal.previous_secret_until and now < signal.previous_secret_until:
            previous = ctx.box.decrypt(signal.previous_secret_enc)
        headers.update(
            signing_headers(
                ctx.box.decrypt(signal.secret_enc), delivery.webhook_id, timestamp, body, previous
            )
        )
    else:
        headers["webhook-id"] = delivery.webhook_id
        headers["webhook-timestamp"] = str(timestamp)
    return OutgoingRequest(
        url=url,
        headers=headers,
        body=body,
        timeout_s=timeout_of(signal.config),
        secret_header_names=secret_names,
        ssl_context=auth.ssl_context if auth is not None else None,
    )


def _replace(headers: dict[str, str], name: str, value: str) -> None:
    """Set a header, dropping any spelling of the same name (header names are case-insensitive)."""
    for existing in [k for k in headers if k.lower() == name.lower()]:
        del headers[existing]
    headers[name] = value


def redact(headers: Mapping[str, str], secret_header_names: frozenset[str] | set[str]) -> dict[str, str]:
    """The headers as an attempt records them: secret values replaced by "[redacted]"."""
    return credentials.redacted(headers, secret_header_names)
