"""Options shared by several commands."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

Home = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="MATDX_HOME",
        show_envvar=True,
        help="matdx home: store, artifacts and run directories [default: ./matdx-data]",
    ),
]


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


Format = Annotated[OutputFormat, typer.Option("--format", "-f", help="output format")]
Campaign = Annotated[str, typer.Argument(metavar="CAMPAIGN",
                                         help="campaign name, or a prefix of its id")]
Wide = Annotated[
    bool,
    typer.Option("--wide", help="every column at full width, even wider than the terminal"),
]
