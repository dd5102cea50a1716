"""Commands for running on HPC machines: ``matdx hpc check``, ``matdx cron show`` and
``matdx report``.

Registered on the main app by :mod:`matdx.cli.main`; heavy imports stay inside the commands.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from matdx.cli.options import Campaign, Format, Home, OutputFormat
from matdx.cli.tables import console, err_console

hpc_app = typer.Typer(help="Batch-queue sites: check their profiles.", no_args_is_help=True)
cron_app = typer.Typer(help="Run ticks from cron.", no_args_is_help=True)

#: Minutes between ticks when no site says otherwise.
DEFAULT_CRON_MINUTES = 5
#: Programs whose directories cron's PATH needs, by scheduler.
SCHEDULER_PROGRAMS = ("sbatch", "qsub", "bsub", "mpirun")

Site = Annotated[str, typer.Argument(help="site profile name, or a path to its YAML file")]


@hpc_app.command("check")
def check(
    site: Site,
    probe: Annotated[bool, typer.Option(
        help="submit a one-task probe job that reports whether matdx, mpi4py, the MPI "
             "launcher and the profile's programs start in the site's batch environment")] = True,
) -> None:
    """Validate a site profile and compare it with the live scheduler when it is reachable.

    Exits 1 when a check fails.
    """
    from matdx.hpc import check_site

    report = check_site(site, probe=probe)
    console.print(report.format(), highlight=False)
    if not report.ok:
        raise typer.Exit(1)


def _matdx_argv() -> list[str]:
    """How cron should start this matdx: the ``matdx`` script beside this Python, else
    ``python -m matdx.cli.main``."""
    script = Path(sys.executable).parent / "matdx"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "matdx.cli.main"]


def cron_line(home: Path, minutes: int, environment: dict[str, str]) -> str:
    """The crontab line that ticks the store in ``home`` every ``minutes`` minutes.

    Parameters
    ----------
    home
        The matdx home (made absolute).
    minutes
        Minutes between ticks, 1–59 (cron's ``*/N``).
    environment
        Variables set on the command (``MATDX_STORE``, ``PATH`` ...), quoted.
    """
    if not 1 <= minutes <= 59:
        raise ValueError(f"minutes must be between 1 and 59, got {minutes}")
    home = home.absolute()
    variables = {"MATDX_HOME": str(home), **environment}
    assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in variables.items())
    command = shlex.join([*_matdx_argv(), "tick"])
    log = shlex.quote(str(home / "tick.log"))
    schedule = "*" if minutes == 1 else f"*/{minutes}"
    # cron runs the line with /bin/sh: the variables are assignments on the command itself.
    # cron turns an unescaped % into a newline, so every % (URL encoding) is escaped.
    line = f"cd {shlex.quote(str(home))} && {assignments} {command} >> {log} 2>&1"
    return f"{schedule} * * * * " + line.replace("%", "\\%")


@cron_app.command("show")
def cron_show(
    home: Home = None,
    site: Annotated[
        str | None, typer.Option(help="site profile: tick as often as it may be polled")
    ] = None,
) -> None:
    """Print the crontab line that advances this store's campaigns unattended.

    Install it with ``crontab -e``. No ``flock`` is needed: a tick that finds another one
    running exits with one line in the log. The line carries absolute paths, ``MATDX_HOME``,
    the store URL and scheduler paths, since cron starts with an almost empty environment.
    """
    from matdx.client import default_home

    minutes = DEFAULT_CRON_MINUTES
    if site is not None:
        from matdx.hpc import load_site

        profile = load_site(site)
        minutes = min(59, max(1, math.ceil(profile.min_poll_interval / 60)))
    environment: dict[str, str] = {}
    for name in ("MATDX_STORE", "MATDX_SITES_PATH"):
        if os.environ.get(name):
            environment[name] = os.environ[name]
    if "MATDX_STORE" in environment:
        from sqlalchemy.engine import URL, make_url

        url = make_url(environment["MATDX_STORE"])
        if url.password:  # never in a crontab: libpq reads it from ~/.pgpass
            environment["MATDX_STORE"] = URL.create(
                url.drivername, url.username, None, url.host, url.port, url.database, url.query
            ).render_as_string(hide_password=False)
            fields = [url.host or "localhost", str(url.port or 5432), url.database or "*",
                      url.username or "*", "PASSWORD"]
            err_console.print(
                "The password is left out of the line: put it in ~/.pgpass (chmod 600) as "
                + ":".join(fields), markup=False, highlight=False,
            )
    directories = [str(Path(sys.executable).parent)]
    for program in SCHEDULER_PROGRAMS:
        found = shutil.which(program)
        if found and str(Path(found).parent) not in directories:
            directories.append(str(Path(found).parent))
    directories += [d for d in ("/usr/local/bin", "/usr/bin", "/bin") if d not in directories]
    environment["PATH"] = os.pathsep.join(directories)
    console.print(cron_line(home or default_home(), minutes, environment), highlight=False,
                  soft_wrap=True, markup=False)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def report(campaign: Campaign, home: Home = None, fmt: Format = OutputFormat.table) -> None:
    """Allocated and busy core-seconds and utilisation per batch job; queue wait and
    throughput of the campaign (from the task farms' event logs)."""
    from matdx.cli.tables import rows_table, rows_text
    from matdx.client import Client
    from matdx.workflows.allocation import campaign_usage

    client = Client(home)
    usage = campaign_usage(client.store, client.resolve_campaign(campaign))
    if fmt == OutputFormat.json:
        sys.stdout.write(json.dumps(usage.as_dict(), indent=2) + "\n")
        return
    rows: list[dict[str, Any]] = []
    for batch in usage.batches:
        data = batch.as_dict()
        rows.append(
            {
                "batch": batch.batch_id[:8],
                "job id": batch.scheduler_id or "-",
                "state": batch.state,
                "slots": batch.slots,
                "tasks": batch.tasks,
                "completed": batch.completed,
                "queue wait s": _seconds(batch.queue_wait_s),
                "run s": _seconds(data["run_s"]),
                "allocated core-s": f"{batch.allocated_core_s:.1f}",
                "busy core-s": f"{batch.busy_core_s:.1f}",
                "utilisation": _percent(batch.utilisation),
            }
        )
    if fmt == OutputFormat.csv:
        sys.stdout.write(rows_text(rows, "csv"))
        return
    console.print(rows_table(rows, title=f"batch jobs of {usage.name}"))
    throughput = usage.throughput_per_hour
    console.print(
        f"{usage.name}: {len(usage.batches)} batch job(s), {usage.completed} task(s) completed; "
        f"allocated {usage.allocated_core_s:.1f} core-s, busy {usage.busy_core_s:.1f} core-s, "
        f"utilisation {_percent(usage.utilisation)}; total queue wait "
        f"{usage.queue_wait_s:.1f} s; throughput "
        f"{'-' if throughput is None else f'{throughput:.0f}'} tasks/h over "
        f"{_seconds(usage.span_s)} s",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``hpc``, ``cron`` and ``report`` to the main app."""
    app.add_typer(hpc_app, name="hpc")
    app.add_typer(cron_app, name="cron")
    app.command("report")(report)
