"""Many rows in one driver executemany on SQLite, with their ids known before they are written.

The inserts of a storeResults call (a thousand results and events) went through SQLAlchemy's
insert-many-values with RETURNING, whose per-row parameter and result processing was a large
share of an ingest. On SQLite a write transaction holds the database's one write lock, and a
table without AUTOINCREMENT gives a new row the largest id plus one: so the ids are known up
front, written explicitly, and the driver takes ready-made tuples.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Table

from qhook.store.db import Tx


def next_ids(tx: Tx, table: Table, count: int) -> list[int]:
    """SQLite, inside a write transaction: the ids the next ``count`` rows of ``table`` get.

    Past the table's highest id and, for a table that never gives an id again (AUTOINCREMENT), past
    its counter; inserting them moves the counter along, as an insert without ids would."""
    if table.dialect_options["sqlite"]["autoincrement"]:
        top = tx.exec_driver_sql(
            f"SELECT max(coalesce((SELECT max(id) FROM {table.name}), 0), "
            "coalesce((SELECT seq FROM sqlite_sequence WHERE name = ?), 0))",
            (table.name,),
        ).scalar()
    else:
        top = tx.exec_driver_sql(f"SELECT max(id) FROM {table.name}").scalar()
    first = int(top or 0) + 1
    return list(range(first, first + count))


def insert_sql(table: Table, columns: Sequence[str]) -> str:
    """A plain INSERT of these columns with SQLite placeholders, for the driver's executemany."""
    names = ", ".join(f'"{c}"' for c in columns)
    return f"INSERT INTO {table.name} ({names}) VALUES ({', '.join('?' * len(columns))})"


def sqlite_time(tx: Tx, column: Column[Any]) -> Callable[[datetime], Any]:
    """What the driver stores for a datetime of ``column``: the column type's bind processing for
    the dialect, then the sqlite3 adapter, applied here once per distinct time instead of once per
    parameter (three times per delivery row).

    The dialect's processing writes every time with its microseconds. Without it (the type's own
    ``bind_processor``) the adapter wrote a whole second without them ("00:00:00" where statements
    wrote "00:00:00.000000"): equal times compared unequal as text, and sorted wrong."""
    process = column.type.dialect_impl(tx.dialect).bind_processor(tx.dialect)
    adapt = sqlite3.adapters.get((datetime, sqlite3.PrepareProtocol))

    def convert(moment: datetime) -> Any:
        value = process(moment) if process is not None else moment
        return adapt(value) if adapt is not None and isinstance(value, datetime) else value

    return convert
