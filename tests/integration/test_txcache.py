"""The per-transaction memo lives exactly as long as its transaction."""

from __future__ import annotations

import gc

from qhook.store import txcache
from qhook.store.db import Database


def test_memos_die_with_their_transactions(db: Database) -> None:
    gc.collect()
    before = len(txcache._memos)
    for n in range(50):
        with db.transaction() as tx:
            txcache.memo(tx)["n"] = n
            assert txcache.memo(tx) == {"n": n}  # shared within the transaction
        with db.transaction() as tx:
            assert txcache.memo(tx) == {}  # the next transaction starts afresh
    gc.collect()
    # An entry that kept its own transaction (and connection) alive would pile up here: a leak of
    # a connection object and its memo per request, found under load in bench/latency.
    assert len(txcache._memos) <= before + 1
