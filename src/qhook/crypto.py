"""Secrets at rest: Fernet with the key from QHOOK_SECRET_KEY or generated into the data folder."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from qhook.errors import QhookError


class SecretUnreadable(QhookError):
    """A stored secret does not open with QHOOK_SECRET_KEY: the key changed, or the database is
    another installation's. Nothing is wrong with the delivery; the setting must be fixed."""

    default_message = "A stored secret cannot be decrypted: was QHOOK_SECRET_KEY changed?"


def require_opens(box: SecretBox, stored: list[tuple[str, str]], *, source: str = "QHOOK_SECRET_KEY") -> None:
    """At start: the key (``source`` says where it came from) must open every secret this database
    holds. A changed key used to show only at send time, where every delivery failed."""
    for where, token in stored:
        try:
            box.decrypt(token)
        except SecretUnreadable:
            raise QhookError(
                f"{source} does not open the secrets stored in this database ({where}): it was "
                "changed, or the database is another installation's. Set the key they were made "
                "with; to move to a new key, give both, new first, comma-separated, and run "
                "`qhook rekey` before dropping the old one."
            ) from None


class SecretBox:
    """Encrypts and decrypts short secrets; several comma-separated keys allow key rotation."""

    def __init__(self, keys: str) -> None:
        try:
            self._fernet = MultiFernet([Fernet(k.strip().encode()) for k in keys.split(",") if k.strip()])
        except ValueError as exc:
            raise QhookError("QHOOK_SECRET_KEY is not a valid Fernet key (32 url-safe base64 bytes)") from exc

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretUnreadable() from exc

    def rotate(self, token: str) -> str:
        """The same secret encrypted with the newest key (the first one given)."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretUnreadable() from exc


def load_or_create_key(data_dir: Path) -> str:
    """The embedded default's key file, created with mode 0600 on first use."""
    path = data_dir / "secret.key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def new_token(prefix: str, nbytes: int = 32) -> str:
    """A random, url-safe token such as ``qhk_...``."""
    return f"{prefix}_{secrets.token_urlsafe(nbytes)}"


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
