"""Standard Webhooks signing (https://www.standardwebhooks.com): pure, no clock, no I/O."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` + base64 of random bytes, as the spec's libraries expect."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret; ValueError when it is not valid base64."""
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a signing secret is 'whsec_' followed by base64") from exc
    if not key:
        raise ValueError("a signing secret may not be empty")
    return key


SECRET_MIN_CHARS = 16
SECRET_MAX_CHARS = 200
SECRET_EXPECTED = (
    f"a signing secret 'whsec_' followed by {SECRET_MIN_CHARS} to {SECRET_MAX_CHARS} characters of"
    " standard base64 (A-Z a-z 0-9 + /, '=' only as padding)"
)


def is_valid_secret(secret: object) -> bool:
    """The one check for a secret given by a person (workflow save, rotation, inspector bins).

    What passes here signs without error at send time, and the public Standard Webhooks libraries
    derive the same key from it (no URL-safe '-'/'_', no impossible base64 lengths).
    """
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        return False
    raw = secret.removeprefix(SECRET_PREFIX)
    if not SECRET_MIN_CHARS <= len(raw) <= SECRET_MAX_CHARS:
        return False
    try:
        secret_key(secret)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=1024)
def _cached_key(secret: str) -> bytes:
    # A worker signs every attempt of a signal with the same secret: decode it once.
    return secret_key(secret)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``."""
    return _sign_with_key(_cached_key(secret), msg_id, timestamp, body)


def _sign_with_key(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    # hmac.new, not the one-shot hmac.digest: that one releases the GIL on every call, handing
    # the worker's event loop to a database thread mid-send.
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(
    secret: str, msg_id: str, timestamp: int, body: bytes, previous_secret: str | None = None
) -> str:
    """The ``webhook-signature`` value: the current signature, then the previous secret's during rotation.

    Receivers accept a message when any space-separated signature matches, so both old and new
    secrets verify during the grace period.
    """
    signatures = [sign(secret, msg_id, timestamp, body)]
    if previous_secret and previous_secret != secret:
        signatures.append(sign(previous_secret, msg_id, timestamp, body))
    return " ".join(signatures)


def signing_headers(
    secret: str, msg_id: str, timestamp: int, body: bytes, previous_secret: str | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secret, msg_id, timestamp, body, previous_secret),
    }
