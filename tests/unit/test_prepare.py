"""build_request and redact: plain data, checked without a socket."""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from cryptography.fernet import Fernet
from standardwebhooks import Webhook

from qhook.context import AppContext
from qhook.crypto import SecretBox
from qhook.delivery.auth import ResolvedAuth
from qhook.delivery.prepare import build_request, redact
from qhook.domain.signing import new_secret

BOX = SecretBox(Fernet.generate_key().decode())
CTX: AppContext = SimpleNamespace(box=BOX)  # type: ignore[assignment]
SECRET = new_secret()


@dataclass(frozen=True)
class Delivery:
    webhook_id: str = "msg_01J9ZQ3V5N3D7XK1W2Y4T6R8P0"
    url: str = "https://erp.example.com/api/batches"
    body: str = '{"event":"result.modified","data":{"@id":17}}'


@dataclass(frozen=True)
class Signal:
    config: dict[str, Any] = field(default_factory=dict)
    secret_enc: str | None = BOX.encrypt(SECRET)
    previous_secret_enc: str | None = None
    previous_secret_until: datetime | None = None


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def test_signed_request_verifies_with_the_library() -> None:
    request = build_request(CTX, Delivery(), Signal(), None, _now())
    assert request.url == "https://erp.example.com/api/batches"
    assert request.body == Delivery().body.encode()
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("qhook/")
    assert request.headers["webhook-id"] == Delivery().webhook_id
    assert Webhook(SECRET).verify(request.body, request.headers) == {
        "event": "result.modified",
        "data": {"@id": 17},
    }
    assert request.timeout_s == 15.0 and request.ssl_context is None


def test_same_webhook_id_on_every_attempt_new_timestamp() -> None:
    first = build_request(CTX, Delivery(), Signal(), None, _now() - timedelta(seconds=30))
    second = build_request(CTX, Delivery(), Signal(), None, _now())
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.headers["webhook-timestamp"] != second.headers["webhook-timestamp"]


def test_rotation_signs_with_previous_secret_until_grace_ends() -> None:
    old = new_secret()
    now = _now()
    signal = Signal(previous_secret_enc=BOX.encrypt(old), previous_secret_until=now + timedelta(hours=1))
    request = build_request(CTX, Delivery(), signal, None, now)
    Webhook(old).verify(request.body, request.headers)
    Webhook(SECRET).verify(request.body, request.headers)
    expired = Signal(previous_secret_enc=BOX.encrypt(old), previous_secret_until=now - timedelta(seconds=1))
    assert " " not in build_request(CTX, Delivery(), expired, None, now).headers["webhook-signature"]


def test_static_headers_cannot_replace_our_own() -> None:
    config = {"headers": {"X-Plant": "Venlo", "Content-Type": "text/plain", "webhook-id": "forged"}}
    request = build_request(CTX, Delivery(), Signal(config=config), None, _now())
    assert request.headers["X-Plant"] == "Venlo"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["webhook-id"] == Delivery().webhook_id


def test_auth_headers_win_and_are_secret() -> None:
    context = ssl.create_default_context()
    auth = ResolvedAuth(
        profile_id=1,
        profile_name="ERP prod",
        headers={"Authorization": "Bearer tok-1"},
        secret_header_names=frozenset({"authorization"}),
        ssl_context=context,
        token="tok-1",
    )
    signal = Signal(config={"headers": {"authorization": "static"}, "timeout_s": 120})
    request = build_request(CTX, Delivery(), signal, auth, _now())
    assert request.headers["Authorization"] == "Bearer tok-1"
    assert "authorization" not in request.headers
    assert "authorization" in request.secret_header_names
    assert request.ssl_context is context
    assert request.timeout_s == 60.0  # capped


def test_legacy_userinfo_url_becomes_basic() -> None:
    delivery = Delivery(url="https://api%40erp:p%3Ass@erp.example.com/in")
    request = build_request(CTX, delivery, Signal(), None, _now())
    assert request.url == "https://erp.example.com/in"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"api@erp:p:ss").decode()
    assert redact(request.headers, request.secret_header_names)["Authorization"] == "[redacted]"


def test_unsigned_signal_still_has_id_and_timestamp() -> None:
    request = build_request(CTX, Delivery(), Signal(secret_enc=None), None, _now())
    assert request.headers["webhook-id"] == Delivery().webhook_id
    assert "webhook-signature" not in request.headers


def test_redact() -> None:
    headers = {
        "Authorization": "Basic abc",
        "X-Custom-Token": "t0k",
        "x-api-key": "k",
        "X-Plant": "Venlo",
        "webhook-signature": "v1,xyz",
    }
    redacted = redact(headers, frozenset({"x-custom-token"}))
    assert redacted == {
        "Authorization": "[redacted]",
        "X-Custom-Token": "[redacted]",
        "x-api-key": "[redacted]",
        "X-Plant": "Venlo",
        "webhook-signature": "v1,xyz",
    }
    assert headers["Authorization"] == "Basic abc"  # the input is untouched
