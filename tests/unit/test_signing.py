"""Signing is verified with the public standardwebhooks library, as receivers do."""

from __future__ import annotations

import base64
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from qhook.domain import signing


def test_library_verifies_our_signature() -> None:
    secret = signing.new_secret()
    body = b'{"event":"result.new","data":{"@id":17}}'
    now = int(time.time())
    headers = signing.signing_headers(secret, "msg_01J0000000000000000000000", now, body)
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers) == {"event": "result.new", "data": {"@id": 17}}


@settings(max_examples=50, deadline=None)
@given(
    body=st.binary(max_size=300).map(lambda b: b.hex().encode()), msg_id=st.from_regex(r"msg_[A-Z0-9]{26}")
)
def test_library_verifies_any_body(body: bytes, msg_id: str) -> None:
    secret = signing.new_secret()
    headers = signing.signing_headers(secret, msg_id, int(time.time()), body)
    Webhook(secret).verify(body, headers, json_parse=False)


def test_wrong_secret_or_changed_body_fails() -> None:
    secret, other = signing.new_secret(), signing.new_secret()
    body = b"{}"
    headers = signing.signing_headers(secret, "msg_1", int(time.time()), body)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"x":1}', headers)


def test_rotation_signs_with_both_secrets() -> None:
    new, old = signing.new_secret(), signing.new_secret()
    body = b'{"a":1}'
    headers = signing.signing_headers(new, "msg_2", int(time.time()), body, previous_secret=old)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(body, headers)
    Webhook(old).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)


def test_same_previous_secret_is_not_repeated() -> None:
    secret = signing.new_secret()
    assert " " not in signing.signature_header(secret, "m", 1, b"x", previous_secret=secret)


def test_known_vector() -> None:
    # The example from the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signing.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_secret_validation() -> None:
    assert signing.is_valid_secret(signing.new_secret())
    assert not signing.is_valid_secret("whsec_***")
    assert not signing.is_valid_secret("no-prefix")
    with pytest.raises(ValueError):
        signing.sign("whsec_", "m", 1, b"")


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_abcdefgh-ijklmnop",
        "whsec_abcdefgh_ijklmnop",
        "whsec_" + "A" * 17,
        "whsec_" + "A" * 12,
        None,
        42,
    ],
)
def test_secrets_that_cannot_sign_are_invalid(secret: object) -> None:
    assert not signing.is_valid_secret(secret)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=12, max_size=140), st.booleans())
def test_every_valid_secret_signs_and_verifies_with_the_library(key: bytes, unpadded: bool) -> None:
    raw = base64.b64encode(key).decode()
    secret = "whsec_" + (raw.rstrip("=") if unpadded else raw)
    assert signing.is_valid_secret(secret)
    assert signing.secret_key(secret) == key
    body = b'{"n": 1}'
    headers = signing.signing_headers(secret, "msg_1", int(time.time()), body)
    Webhook(secret).verify(body, headers)
