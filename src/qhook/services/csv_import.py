"""Import results from CSV rows: chunks of rows per transaction, a bad row never blocks good ones.

Each row runs inside a savepoint of its chunk's transaction, so a row that fails leaves nothing
behind while the chunk's good rows commit together (fast: one commit per chunk, not per row).
Columns are field names; ``date`` and ``@id`` are optional; an empty cell means "no value"
(it does not clear a value when a key field updates an existing result). The header is checked
before any row is stored: a column that names no field of the set (a typo such as ``statsu_``)
or names one twice stops the import. Its empty cells were dropped as "no value", so the rows were
stored without it and the import said nothing.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from qhook.context import AppContext
from qhook.domain.fields import FieldDef
from qhook.domain.json_text import NUL_EXPECTED, without_nul
from qhook.errors import BadRequest, QhookError
from qhook.services import compat, results
from qhook.services import sets as sets_service
from qhook.store.compat_queries import savepoint

DEFAULT_CHUNK = 500


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One data row: its 1-based number among data rows, the file line it ends on, its cells."""

    number: int
    line: int
    cells: Mapping[str | None, Any]
    problem: str | None = None  # the CSV itself is broken here (the row is reported, not stored)


@dataclass(frozen=True, slots=True)
class RowError:
    number: int
    line: int
    message: str


@dataclass(slots=True)
class ImportSummary:
    created: int = 0
    updated: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def stored(self) -> int:
        return self.created + self.updated


@dataclass(frozen=True, slots=True)
class CsvTable:
    """A CSV file's header (empty for an empty file) and its data rows, read lazily."""

    columns: list[str]
    rows: Iterator[CsvRow]


def csv_table(lines: Iterable[bytes]) -> CsvTable:
    """Parse UTF-8 CSV lines (a BOM is fine): the header now, the rows lazily (the file is never
    loaded whole)."""

    def decoded() -> Iterator[str]:
        first = True
        for raw in lines:
            text = raw.decode("utf-8", errors="replace")
            if first:
                text, first = text.removeprefix("\ufeff"), False
            yield text

    # strict: a quote left open took every line after it into one cell, stored as a value.
    reader = csv.DictReader(decoded(), strict=True)
    try:
        columns = list(reader.fieldnames or ())
    except csv.Error as exc:
        raise BadRequest(f"the header (line 1) is not readable as CSV ({exc}): a quote left open?") from exc

    def rows() -> Iterator[CsvRow]:
        number = 0
        while True:
            number += 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # the rest of the file cannot be read as rows
                # line_num is still the last good row's: this one starts on the next line.
                problem = f"not readable as CSV from this line on ({exc}): a quote left open?"
                yield CsvRow(number, reader.line_num + 1, {}, problem)
                return
            yield CsvRow(number, reader.line_num, cells)

    return CsvTable(columns, rows())


def check_header(columns: list[str], fields: Iterable[FieldDef], set_id: int) -> None:
    """Every named column is an active field of the set, ``date`` or ``@id``, and named once
    (csv.DictReader keeps the last of two columns of one name). A column without a name (a
    trailing separator, as spreadsheets write) is no field: a value in it fails its row."""
    if not columns:
        raise BadRequest("the file is empty: its first line must be a header of field names (and date, @id)")
    by_name = {f.name: f for f in fields}
    seen: set[str] = set()
    for name in columns:
        if name in seen and name.strip():
            raise BadRequest(f"the header names the column {name!r} twice; nothing was stored")
        seen.add(name)
    known = ", ".join(f.name for f in by_name.values() if f.active) or "none"
    for name in columns:
        if not name.strip() or name in ("date", "@id"):
            continue
        field = by_name.get(name)
        if field is None:
            raise BadRequest(
                f"the header's column {without_nul(name)!r} is no field of set {set_id} (its fields: "
                f"{known}; and date, @id); nothing was stored"
            )
        if not field.active:
            raise BadRequest(f"the header's column {name!r} is a deactivated field; nothing was stored")


def _values(row: CsvRow) -> dict[str, Any]:
    if row.problem is not None:
        raise BadRequest(row.problem)
    if row.cells.get(None):
        raise BadRequest("the row has more cells than the header has columns")
    values = {str(k): v for k, v in row.cells.items() if k is not None and v is not None and v != ""}
    for name, value in values.items():
        if "\x00" in value or "\x00" in name:  # PostgreSQL cannot store one; SQLite would
            raise BadRequest(f"{without_nul(name)}: {NUL_EXPECTED} expected")
    return values


def _chunks(rows: Iterable[CsvRow], size: int) -> Iterator[list[CsvRow]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


def import_rows(
    ctx: AppContext,
    set_id: int,
    table: CsvTable,
    *,
    key_field: str | None = None,
    actor: str = "cli",
    chunk_size: int = DEFAULT_CHUNK,
    on_error: Callable[[RowError], None] | None = None,
) -> ImportSummary:
    """Store every good row; report each bad one through ``on_error`` and in the summary."""
    current = sets_service.get_set(ctx.db, set_id)
    if key_field is not None and not any(f.name == key_field and f.active for f in current.fields):
        raise BadRequest(f"--key-field: set {set_id} has no active field {key_field!r}")
    check_header(table.columns, current.fields, set_id)
    if key_field is not None and key_field not in table.columns:
        # Every row failed, one message each.
        raise BadRequest(
            f"--key-field {key_field}: the header has no column {key_field!r}; nothing was stored"
        )
    summary = ImportSummary()
    for chunk in _chunks(table.rows, chunk_size):
        created = updated = 0
        failed: list[RowError] = []
        with results.writing(ctx) as tx:
            for row in chunk:
                try:
                    with savepoint(tx):
                        outcome = compat.store_one_tx(
                            tx,
                            ctx,
                            set_id,
                            _values(row),
                            key_field=key_field,
                            edit_only=False,
                            add_list_options=False,
                            actor=actor,
                        )
                except QhookError as exc:
                    if exc.status >= 500:
                        raise
                    failed.append(RowError(row.number, row.line, exc.message))
                    continue
                if outcome.created:
                    created += 1
                else:
                    updated += 1
        # Counted after commit: a chunk that fails to commit stored nothing.
        summary.created += created
        summary.updated += updated
        summary.errors.extend(failed)
        for error in failed:
            if on_error is not None:
                on_error(error)
    return summary
