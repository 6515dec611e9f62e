"""One error root for qhook; each error carries its HTTP status and a default message.

    QhookError (500)
    ├── ValidationFailed (422)     bad input; ``details`` names each field
    │   └── BadRequest (400)        malformed parameters (compat API style)
    ├── Unauthorized (401)         no or unknown credentials
    ├── Forbidden (403)            role or set permission missing
    ├── NotFound (404)
    ├── Conflict (409)             state forbids it (e.g. set still has results)
    ├── PreconditionFailed (412)   If-Match version mismatch
    ├── PayloadTooLarge (413)
    ├── RateLimited (429)          carries ``retry_after_s``
    ├── StoreError (503)           database unreachable or failing (raised from store/ only)
    └── DeliveryError (502)        outgoing HTTP failed (raised from delivery/ only); carries ``kind``

The API and UI render these in one place (``qhook.api.errors``); services never raise HTTPException.
"""

from __future__ import annotations

from typing import Any, ClassVar


class QhookError(Exception):
    """Root of every error qhook raises on purpose."""

    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "Internal error"

    def __init__(self, message: str | None = None, *, details: list[dict[str, Any]] | None = None) -> None:
        self.message = message or self.default_message
        self.details = details or []
        super().__init__(self.message)

    @property
    def for_operators(self) -> str:
        """The message for a log or the CLI, where more may be said than to an API client."""
        return self.message


class ValidationFailed(QhookError):
    status = 422
    default_message = "Invalid input"


class BadRequest(ValidationFailed):
    status = 400
    default_message = "Invalid parameter"


class Unauthorized(QhookError):
    status = 401
    default_message = "Missing or invalid credentials"


class Forbidden(QhookError):
    status = 403
    default_message = "Not allowed"


class NotFound(QhookError):
    status = 404
    default_message = "Not found"


class Conflict(QhookError):
    status = 409
    default_message = "Conflict"


class PreconditionFailed(QhookError):
    status = 412
    default_message = "The result changed since you read it (version mismatch)"


class PayloadTooLarge(QhookError):
    status = 413
    default_message = "Request body too large"


class RateLimited(QhookError):
    status = 429
    default_message = "Rate limit exceeded"

    def __init__(self, message: str | None = None, *, retry_after_s: int = 60) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StoreError(QhookError):
    """The database cannot be reached or used now. ``reason`` is the driver's first line (e.g.
    "password authentication failed for user ..."): for operators (CLI, logs, /readyz), never in
    an API answer, which would tell anyone the database's address and user."""

    status = 503
    default_message = "Database unavailable"

    def __init__(self, message: str | None = None, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def for_operators(self) -> str:  # the reason too
        return f"{self.message}: {self.reason}" if self.reason else self.message


class DeliveryError(QhookError):
    status = 502
    default_message = "Outgoing request failed"

    def __init__(self, message: str | None = None, *, kind: str = "connect") -> None:
        super().__init__(message)
        self.kind = kind


def field_error(
    field: str, expected: str, *, status_cls: type[ValidationFailed] = ValidationFailed
) -> ValidationFailed:
    """An error naming ``field`` and what was expected there."""
    return status_cls(f"{field}: {expected}", details=[{"field": field, "error": expected}])
