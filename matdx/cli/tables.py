"""Rich rendering of matdx's reports: every table the CLI prints is built here.

Tables fit the terminal (80 columns included) without cutting a number or a header: the
least important columns are left out, and the caption names them; ``--wide`` prints every
column at its full width. Numbers are shown with the digits they carry (``300``, not
``300.0000``); ids are shortened to 8 characters by the commands that put them in rows.

The functions take plain data and return (or print) text, so the same tables serve a local
store and a remote one.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from matdx.store.models import JobState

__all__ = ["console", "err_console", "format_number", "print_table", "rows_table", "rows_text",
           "status_rows", "status_table"]

console = Console()
# Messages on stderr are never wrapped: a path or a command cut in two cannot be copied.
err_console = Console(stderr=True, soft_wrap=True)

STATE_STYLES = {
    JobState.COMPLETED: "green",
    JobState.FAILED: "bold red",
    JobState.RUNNING: "cyan",
    JobState.READY: "blue",
    JobState.WAITING: "dim",
    JobState.ERRORED: "yellow",
    JobState.CANCELLED: "magenta",
}
SIGNIFICANT = 6  # digits of a float shown in a table (trailing zeros dropped)
SHRUNK_WIDTH = 12  # narrowest a text column that may shrink is made, characters


def format_number(value: float, digits: int = SIGNIFICANT) -> str:
    """A float with up to ``digits`` significant digits and no trailing zeros:
    ``300.0`` → ``300``, ``134.637912`` → ``134.638``, ``1.31e-05`` → ``1.31e-05``."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}g}"


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format_number(value)
    return "" if value is None else str(value)


def _width(texts: Sequence[str]) -> int:
    return max((max((cell_len(line) for line in t.splitlines()), default=0) for t in texts),
               default=0)


def rows_table(
    rows: Sequence[Mapping[str, Any]],
    title: str = "",
    *,
    wide: bool = False,
    width: int | None = None,
    priority: Sequence[str] = (),
    shrink: Sequence[str] = (),
    styles: Mapping[str, str] | None = None,
) -> Table:
    """A table of ``rows`` (one column per key) that fits ``width`` characters.

    Parameters
    ----------
    rows
        One mapping per row; columns in order of first appearance.
    wide
        Keep every column at full width (print with :func:`print_table`).
    width
        Characters available; default the console's width.
    priority
        Columns in order of importance; the others follow in their own order. The least
        important columns are left out first (and named in the caption).
    shrink
        Text columns that may be narrowed (their text wraps); numbers never are.
    styles
        Rich style per column.
    """
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = {c: [_cell(row.get(c)) for row in rows] for c in columns}
    natural = {c: max(cell_len(c), _width(cells[c])) for c in columns}
    if wide:
        shrink = ()
    floor = {c: min(natural[c], max(SHRUNK_WIDTH, cell_len(c))) if c in shrink else natural[c]
             for c in columns}
    order = [c for c in priority if c in columns] + [c for c in columns if c not in priority]
    shown = list(columns)
    limit = width or console.width
    # a rich table with its default box takes 3 characters per column and 1 more
    while not wide and len(shown) > 1 and 1 + sum(floor[c] + 3 for c in shown) > limit:
        shown.remove(next(c for c in reversed(order) if c in shown))
    hidden = [c for c in columns if c not in shown]
    caption = (f"not shown: {', '.join(hidden)} (--wide shows every column)" if hidden
               else None)
    table = Table(title=title or None, title_justify="left", caption=caption,
                  caption_justify="left")
    for column in shown:
        numeric = all(isinstance(r.get(column), int | float) for r in rows if column in r)
        table.add_column(
            column,
            justify="right" if numeric else "left",
            style=(styles or {}).get(column),
            min_width=floor[column],
            no_wrap=column not in shrink,
            overflow="fold",
        )
    for i in range(len(rows)):
        table.add_row(*(cells[column][i] for column in shown))
    return table


def print_table(table: Table, wide: bool = False) -> None:
    """Print a table; ``wide`` lets it be wider than the terminal instead of squeezing it."""
    if not wide:
        console.print(table)
        return
    from rich.measure import Measurement

    needed = Measurement.get(console, console.options.update_width(10_000), table).maximum
    console.print(table, width=max(console.width, needed), crop=False)


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


def status_rows(statuses: Sequence[Any], wide: bool = False) -> list[dict[str, Any]]:
    """One row per campaign: name, short id, jobs by state (only the states some campaign
    has, unless ``wide``), blocked jobs (if any) and the total."""
    states = [s for s in JobState
              if wide or any(status.counts.get(s) for status in statuses)]
    blocked = wide or any(status.blocked for status in statuses)
    rows = []
    for status in statuses:
        row: dict[str, Any] = {"campaign": status.name, "id": status.campaign_id[:8]}
        row.update({state.lower(): status.counts.get(state) or None for state in states})
        if blocked:
            row["blocked"] = status.blocked or None
        row["total"] = status.total
        rows.append(row)
    return rows


def status_table(statuses: Sequence[Any], wide: bool = False, width: int | None = None) -> Table:
    """Jobs by state for each campaign (see :func:`status_rows`)."""
    rows = status_rows(statuses, wide)
    important = ["campaign", "failed", "running", "total", "completed", "errored", "ready",
                 "waiting", "blocked", "cancelled", "id"]
    table = rows_table(rows, title="campaigns", wide=wide, width=width, priority=important,
                       shrink=["campaign"],
                       styles={s.lower(): style for s, style in STATE_STYLES.items()})
    for column in table.columns:  # counts are numbers even where a cell is empty
        if column.header not in ("campaign", "id"):
            column.justify = "right"
    return table
