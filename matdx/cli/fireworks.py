"""FireWorks on the command line: ``matdx import fireworks`` and ``matdx fireworks export``.

``matdx import`` becomes a group whose default is the archive import, so ``matdx import
ARCHIVE`` works as before and ``matdx import fireworks --launchpad FILE`` reads a LaunchPad.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from matdx.cli.options import Campaign, Home
from matdx.cli.tables import console

LaunchpadFile = Annotated[
    Path, typer.Option("--launchpad", help="FireWorks LaunchPad file (my_launchpad.yaml)")
]

fireworks_app = typer.Typer(
    help="Run matdx campaigns on FireWorks LaunchPads.", no_args_is_help=True
)


class _ImportGroup(TyperGroup):
    """``matdx import SOURCE``: a subcommand's name, else an archive (``import archive``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["archive", *args]
        return super().parse_args(ctx, args)


def import_fireworks(
    launchpad: LaunchpadFile,
    owner: Annotated[str, typer.Option(help="owner of the imported records")] = "",
    project: Annotated[str, typer.Option(help="project (group) of the records")] = "",
    access: Annotated[
        str, typer.Option(help="private, group, embargoed or public")
    ] = "private",
    license: Annotated[
        str | None, typer.Option("--license", help="SPDX licence expression, e.g. CC-BY-4.0")
    ] = None,
    embargo_until: Annotated[
        str | None, typer.Option(help="end of the embargo (ISO date), with --access embargoed")
    ] = None,
    home: Home = None,
) -> None:
    """Import the ended Fireworks of a LaunchPad (and atomate task documents) as records;
    importing again adds nothing."""
    from matdx.client import Client
    from matdx.fireworks_import import import_launchpad

    governance = {"owner": owner, "project": project, "access": access, "license": license,
                  "embargo_until": embargo_until}
    if not launchpad.is_file():
        raise typer.BadParameter(f"no LaunchPad file {str(launchpad)!r}", param_hint="--launchpad")
    client = Client(home)
    report = import_launchpad(client.store, launchpad, governance=governance)
    console.print(
        f"{report.added} record(s) added ({report.failed} of failed launches), "
        f"{report.present} already present; {report.in_flight} Firework(s) not ended, "
        "not imported",
        highlight=False,
        soft_wrap=True,
    )


@fireworks_app.command("export")
def export(
    campaign: Campaign,
    launchpad: LaunchpadFile,
    category: Annotated[
        str | None, typer.Option(help="FireWorks category of the campaign's Fireworks")
    ] = None,
    home: Home = None,
) -> None:
    """Hand a campaign's execution to FireWorks: its jobs become Fireworks on the LaunchPad
    as they become ready (this tick, and every ``matdx tick`` after it)."""
    from matdx.client import Client
    from matdx.fireworks_export import export_campaign

    client = Client(home)
    report = export_campaign(client.store, client.resolve_campaign(campaign), launchpad,
                             category=category)
    console.print(report.summary(), highlight=False)


def import_app(archive_command: Callable[..., None]) -> typer.Typer:
    """The ``matdx import`` group: ``archive`` (the default) and ``fireworks``."""
    group = typer.Typer(
        cls=_ImportGroup,
        help="Load records: an archive (matdx import ARCHIVE), or a FireWorks LaunchPad.",
        no_args_is_help=True,
    )
    group.command("archive")(archive_command)
    group.command("fireworks")(import_fireworks)
    return group
