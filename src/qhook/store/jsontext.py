"""JSON columns written from text serialised once with orjson, for the batch inserts of an ingest.

SQLAlchemy's JSON type serialises with the standard library per value; for the events of a
storeResults call (five JSON columns each, evaluations included) that was a fifth of the time.
Here the text goes in as is: TEXT on SQLite (what the JSON type stores there), cast to jsonb on
PostgreSQL. What is read back is the same value either way.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import String, bindparam, cast
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from qhook.store.db import Tx


def dumps(value: Any) -> str:
    """JSON text; None becomes JSON null, as the JSON type itself writes it."""
    return orjson.dumps(value).decode()


def param(tx: Tx, name: str) -> ColumnElement[Any]:
    """A bound JSON text for column values (insert/update ``values``) on this dialect."""
    text = bindparam(name, type_=String)
    return cast(text, JSONB) if tx.dialect.name == "postgresql" else text
