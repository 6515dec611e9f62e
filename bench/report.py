"""Rows of the final table: a figure (median, min, max over runs), an optional ratio, the target."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(width=150)


@dataclass
class Row:
    scenario: str
    db: str
    metric: str
    unit: str
    values: list[float]
    target: str = ""
    met: bool | None = None
    load: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "db": self.db,
            "metric": self.metric,
            "unit": self.unit,
            "median": _round(self.median),
            "min": _round(min(self.values)) if self.values else None,
            "max": _round(max(self.values)) if self.values else None,
            "runs": [_round(v) for v in self.values],
            "target": self.target,
            "met": self.met,
            "load": self.load,
            "note": self.note,
            **self.extra,
        }


def _round(value: float) -> float:
    return round(value, 3 if abs(value) < 10 else 1)


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def show(rows: list[Row], title: str = "qhook benchmarks") -> None:
    table = Table(title=title, show_lines=False)
    for name, justify in (
        ("scenario", "left"),
        ("db", "left"),
        ("metric", "left"),
        ("median", "right"),
        ("min", "right"),
        ("max", "right"),
        ("unit", "left"),
        ("target", "left"),
        ("met", "center"),
        ("load", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        met = "-" if row.met is None else ("[green]yes[/]" if row.met else "[red]NO[/]")
        table.add_row(
            row.scenario,
            row.db,
            row.metric,
            _fmt(row.median),
            _fmt(min(row.values)) if row.values else "-",
            _fmt(max(row.values)) if row.values else "-",
            row.unit,
            row.target,
            met,
            row.load,
        )
    console.print(table)
    for row in rows:
        if row.note:
            console.print(f"[dim]{row.scenario}/{row.db}/{row.metric}: {row.note}[/]")


def say(text: str) -> None:
    console.print(f"[dim]{text}[/]")
