"""``matdx diagnose DIR --code CODE``: what a run directory shows and what would fix it."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from matdx.cli.tables import console, err_console

__all__ = ["diagnose_command", "register"]


class DiagnoseFormat(StrEnum):
    text = "text"
    json = "json"


def diagnose_command(
    directory: Annotated[Path, typer.Argument(help="run directory (matdx's or hand-run)")],
    code: Annotated[str, typer.Option("--code", help="program that ran there, e.g. espresso")],
    output: Annotated[
        DiagnoseFormat, typer.Option("--format", "-f", help="text, or one JSON object")
    ] = DiagnoseFormat.text,
) -> None:
    """Print the parsed outcome, every error found with its kind, and the correction the
    next attempt would get."""
    from matdx.codes.diagnosis import diagnose_run
    from matdx.codes.registry import UnsupportedCode, code_info

    try:
        info = code_info(code)
    except UnsupportedCode as err:
        err_console.print(f"error: --code: {err}")
        raise typer.Exit(2) from err
    if info.template is None:
        err_console.print(f"error: --code: {code} runs in-process and has no run directories")
        raise typer.Exit(2)
    if not directory.is_dir():
        err_console.print(f"error: DIR: {directory} is not a directory")
        raise typer.Exit(2)
    report = diagnose_run(info.template(), directory)
    if output is DiagnoseFormat.json:
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
        return
    console.print(f"{report['code']} run in {report['directory']}", markup=False)
    console.print(f"completed: {'yes' if report['completed'] else 'no'}", markup=False)
    for key, value in report["results"].items():
        if value not in (None, []):
            console.print(f"  {key}: {value}", markup=False)
    if not report["errors"]:
        console.print("errors: none", markup=False)
    for error in report["errors"]:
        console.print(f"error {error['name']} [{error['kind']}]: {error['message']}",
                      markup=False)
    correction = report["correction"]
    if correction is None:
        console.print("correction: none", markup=False)
    else:
        console.print(f"correction by {correction['handler']}: {correction['description']}",
                      markup=False)
        for key in ("parameter_updates", "resources", "actions"):
            if correction.get(key):
                console.print(f"  {key}: {json.dumps(correction[key])}", markup=False)
        if correction.get("restart_structure"):
            console.print("  restart from the run's last structure", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``matdx diagnose`` to the app."""
    app.command("diagnose")(diagnose_command)
