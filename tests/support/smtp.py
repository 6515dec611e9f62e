"""A real SMTP server on loopback (aiosmtpd) for the tests that send mail."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiosmtpd.controller import Controller

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.store import error_reports
from tests.support.pg import free_port


@contextmanager
def smtp_server(handler: object, **options: Any) -> Iterator[int]:
    """Serve ``handler`` (an aiosmtpd handler, e.g. with ``handle_DATA``) on 127.0.0.1; yield the port.

    ``options`` go to aiosmtpd's Controller: ``ssl_context`` (TLS from the start), ``tls_context``
    (STARTTLS), ``authenticator``, ``auth_require_tls``."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def report(ctx: AppContext, endpoint: str, text: str) -> None:
    """An unsent error report for ops@example.com about ``endpoint``: what the mailer sends."""
    with ctx.db.transaction() as tx:
        error_reports.add(
            tx,
            endpoint=endpoint,
            email="ops@example.com",
            kind="delivery_failed",
            delivery_id=None,
            text=text,
            now=utcnow(),
        )
