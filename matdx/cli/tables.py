"""Rich rendering of matdx's reports: every table the CLI prints is built here."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from matdx.store.models import JobState

__all__ = ["console", "rows_table", "rows_text", "status_table"]

console = Console()
err_console = Console(stderr=True)

STATE_STYLES = {
    JobState.COMPLETED: "green",
    JobState.FAILED: "bold red",
    JobState.RUNNING: "cyan",
    JobState.READY: "blue",
    JobState.WAITING: "dim",
    JobState.ERRORED: "yellow",
    JobState.CANCELLED: "magenta",
}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or math.isnan(value):
            return f"{value:g}"
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.4f}"
    return "" if value is None else str(value)


def rows_table(rows: Sequence[Mapping[str, Any]], title: str = "") -> Table:
    table = Table(title=title or None, title_justify="left")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        numeric = all(isinstance(r.get(column), int | float) for r in rows if column in r)
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    return table


def rows_text(rows: Sequence[Mapping[str, Any]], fmt: str) -> str:
    """Rows as CSV or JSON text."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2, default=str)
    buffer = io.StringIO()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def status_table(statuses: Sequence[Any]) -> Table:
    table = Table(title="campaigns", title_justify="left")
    table.add_column("campaign")
    table.add_column("id")
    for state in JobState:
        table.add_column(state.lower(), justify="right", style=STATE_STYLES[state])
    table.add_column("blocked", justify="right")
    for status in statuses:
        table.add_row(
            status.name,
            status.campaign_id[:8],
            *(str(status.counts.get(state, "")) for state in JobState),
            str(status.blocked or ""),
        )
    return table
