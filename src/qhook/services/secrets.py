"""The secrets stored encrypted with QHOOK_SECRET_KEY, encrypted again with its newest key."""

from __future__ import annotations

from qhook.context import AppContext, require_secret_key
from qhook.services import audit
from qhook.store import secrets as store


def rekey(ctx: AppContext, *, actor: str) -> int:
    """Encrypt every stored secret again with the newest key (the first of QHOOK_SECRET_KEY), in
    one transaction, so the older keys can be dropped; how many. Refused (nothing changed) while
    any stored secret opens with none of the keys given."""
    require_secret_key(ctx)
    with ctx.db.transaction() as tx:
        count = store.reencrypt(tx, ctx.box.rotate)
        audit.record(tx, actor, "secrets.rekey", "secrets", None, {"count": count})
    return count
