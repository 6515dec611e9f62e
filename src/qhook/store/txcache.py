"""Things read once per transaction (a set's definition, its workflows), kept with the transaction.

A storeResults call writes a thousand results in one transaction; reading the set and its
workflows again for each of them was most of its time. The memo lives exactly as long as that
transaction object, and every store function that changes a set's fields or a
workflow calls ``invalidate`` so a later read in the same transaction sees the change.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from qhook.store.db import Tx

# Keyed by the transaction object, weakly: the memo dies with its transaction. (Keyed by the
# connection, with the transaction in the value, every entry kept its own key alive: each request
# leaked a Connection, its transaction and its memo; found by counting live objects under load.)
_memos: WeakKeyDictionary[object, dict[str, Any]] = WeakKeyDictionary()
DEFINITIONS = "definitions"


def memo(tx: Tx) -> dict[str, Any]:
    """This transaction's memo (a fresh one when the connection began another transaction)."""
    current = tx.get_transaction()
    if current is None:  # outside a transaction nothing can be shared safely
        return {}
    found = _memos.get(current)
    if found is None:
        found = _memos[current] = {}
    return found


def definitions(tx: Tx) -> dict[Any, Any]:
    """Memoised definitions (sets, workflow plans); emptied by ``invalidate``."""
    found: dict[Any, Any] = memo(tx).setdefault(DEFINITIONS, {})
    return found


def invalidate(tx: Tx) -> None:
    """A set or workflow changed in this transaction: forget every memoised definition."""
    memo(tx).pop(DEFINITIONS, None)
