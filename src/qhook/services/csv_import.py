"""Import results from CSV rows: chunks of rows per transaction, a bad row never blocks good ones.

Each row runs inside a savepoint of its chunk's transaction, so a row that fails leaves nothing
behind while the chunk's good rows commit together (fast: one commit per chunk, not per row).
Columns are field names; ``date`` and ``@id`` are optional; an empty cell means "no value"
(it does not clear a value when a key field updates an existing result).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from qhook.context import AppContext
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


def csv_rows(lines: Iterable[bytes]) -> Iterator[CsvRow]:
    """Parse UTF-8 CSV lines (a BOM is fine) into rows, lazily: the file is never loaded whole."""

    def decoded() -> Iterator[str]:
        first = True
        for raw in lines:
            text = raw.decode("utf-8", errors="replace")
            if first:
                text, first = text.removeprefix("\ufeff"), False
            yield text

    # strict: a quote left open took every line after it into one cell, stored as a value.
    reader = csv.DictReader(decoded(), strict=True)
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
    rows: Iterable[CsvRow],
    *,
    key_field: str | None = None,
    actor: str = "cli",
    chunk_size: int = DEFAULT_CHUNK,
    on_error: Callable[[RowError], None] | None = None,
) -> ImportSummary:
    """Store every good row; report each bad one through ``on_error`` and in the summary."""
    current = sets_service.get_set(ctx.db, set_id)
    if key_field is not None and not any(f.name == key_field for f in current.fields):
        raise BadRequest(f"--key-field: set {set_id} has no field {key_field!r}")
    summary = ImportSummary()
    for chunk in _chunks(rows, chunk_size):
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
