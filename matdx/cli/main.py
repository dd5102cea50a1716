"""The ``matdx`` command line: thin commands over :class:`matdx.client.Client`.

Heavy imports happen inside the commands, so ``matdx --help`` and ``matdx tick`` start fast.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from matdx.cli import hpc, serve
from matdx.cli.diagnose import register as register_diagnose_command
from matdx.cli.fireworks import fireworks_app
from matdx.cli.options import Campaign, Format, Home, OutputFormat, Wide
from matdx.cli.plot import plot as plot_record
from matdx.cli.records import register as register_record_commands
from matdx.cli.tables import console, err_console
from matdx.cli.users import register as register_user_commands
from matdx.remote import RemoteError, remote_client

app = typer.Typer(
    name="matdx",
    help="High-throughput computational materials science: campaigns, runs, results.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
store_app = typer.Typer(help="Check and maintain the store.", no_args_is_help=True)
app.add_typer(store_app, name="store")
hpc.register(app)  # matdx hpc check, matdx cron show, matdx report
register_diagnose_command(app)  # matdx diagnose DIR --code CODE
serve.register(app)  # matdx serve, matdx tokens create/list/revoke
app.add_typer(fireworks_app, name="fireworks")  # matdx fireworks export
register_user_commands(app)  # matdx users add/list, matdx projects add-member


class UsageFailure(Exception):
    """A user error: printed as one line, exit code 2."""


def _existing_client(home: Path | None) -> Any:
    """The client of a store that exists: commands that only read never create one."""
    import os

    from matdx.client import default_home

    folder = home or default_home()
    if not os.environ.get("MATDX_STORE") and not (Path(folder) / "store.sqlite").is_file():
        raise LookupError(f"no matdx store in {Path(folder).absolute()}; run `matdx submit "
                          "FILE` (or `matdx init`) there first, or pass --home")
    return _client(home)


def _client(home: Path | None, workers: int | None = None) -> Any:
    from matdx.client import Client

    executors = None
    if workers is not None:
        from matdx.workflows.executors.local import LocalExecutor

        executors = {"local": LocalExecutor(workers)}
    return Client(home, executors=executors)


@app.command()
def init(home: Home = None) -> None:
    """Create (or migrate) the store in the home directory."""
    client = _client(home)
    console.print(
        f"store ready: {client.store.display_url}  (artifacts in {client.store.artifacts.root})"
    )


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="campaign file (YAML)")],
    home: Home = None,
    force: Annotated[bool, typer.Option(help="run jobs even if identical results exist")] = False,
    force_large: Annotated[bool, typer.Option(
        help="accept more than 20,000 atoms per structure, 1,000 sweep points per study or "
             "10,000 workflows")] = False,
) -> None:
    """Validate a campaign file and add its jobs to the store."""
    from matdx.workflows.campaign import load_campaign
    from matdx.workflows.submit import SubmitError

    # before the store is opened: bad input writes nothing
    graph = load_campaign(file, force_large=force_large)
    remote = remote_client()
    if remote is not None:  # $MATDX_URL: the service validates again and writes
        status = remote.submit_file(file, force=force, force_large=force_large)
        console.print(
            f"submitted campaign {status['name']} ({status['id']}): {status['total']} jobs in "
            f"{status['workflows']} workflows"
        )
        return
    client = _client(home)
    who = client.identity()
    if graph.owner and graph.owner != who.name:
        raise SubmitError(
            f"{file}: owner {graph.owner!r} is not you ({who.name!r}); a campaign is owned "
            "by whoever submits it (leave owner out, or hand it over later with "
            "`matdx records set-access CAMPAIGN --owner NAME`)"
        )
    campaign_id = client.submit(graph, force=force)
    status = client.status(campaign_id)[0]
    console.print(
        f"submitted campaign {status.name} ({campaign_id}): {status.total} jobs in "
        f"{_count_workflows(client, campaign_id)} workflows"
    )


def _count_workflows(client: Any, campaign_id: str) -> int:
    from sqlalchemy import func, select

    from matdx.store.models import Workflow

    with client.store.transaction() as session:
        return session.scalar(select(func.count()).where(Workflow.campaign_id == campaign_id))


@app.command()
def tick(
    home: Home = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for a running tick")] = 0.0,
    workers: Annotated[int | None, typer.Option(help="local worker processes")] = None,
) -> None:
    """Advance every campaign by one step (harvest, recover, expand, release, launch).

    Safe to run from cron: a tick that finds another one running exits quietly.
    """
    from matdx.store.lock import StoreBusy

    client = _client(home, workers)
    try:
        report = client.tick(wait_s=wait)
    except StoreBusy as busy:
        console.print(f"tick skipped: {busy}")
        return
    console.print(report.summary(), highlight=False)


@app.command()
def run(
    campaign: Annotated[str | None, typer.Argument(
        metavar="CAMPAIGN", help="campaign name or id prefix (default: all)")] = None,
    home: Home = None,
    workers: Annotated[int | None, typer.Option(help="local worker processes")] = None,
    poll: Annotated[float, typer.Option(help="seconds between ticks")] = 0.5,
    wide: Wide = False,
) -> None:
    """Tick until the campaign has nothing left to run, with a progress bar.

    Exits with code 1 when a job ended FAILED, after a summary of why.
    """
    _existing_client(home).store.dispose()
    client = _client(home, workers)
    if campaign is not None:
        client.resolve_campaign(campaign)  # an unknown campaign fails before the progress bar
    _run_with_progress(client, campaign, poll)
    failed = _print_status(client, campaign, wide)
    if failed:
        err_console.print(f"{failed} job(s) FAILED; see the reasons above and "
                          "`matdx show ID` for each", highlight=False)
        raise typer.Exit(1)


def _run_with_progress(client: Any, campaign: str | None, poll: float) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from matdx.store.models import JobState

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("running", total=None, detail="")

        def update(_report: Any, statuses: list[Any]) -> None:
            total = sum(s.total for s in statuses)
            counts: dict[str, int] = {}
            for status in statuses:
                for state, n in status.counts.items():
                    counts[state] = counts.get(state, 0) + n
            finished = sum(
                counts.get(s, 0) for s in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
            )
            detail = " ".join(f"{s.lower()} {counts[s]}" for s in JobState if counts.get(s))
            progress.update(task, total=total, completed=finished, detail=detail)

        client.run(campaign, poll_s=poll, on_tick=update)


#: Jobs named under a cause shared by several FAILED jobs (the rest are counted).
MAX_JOBS_NAMED = 3


def _failures_by_reason(failures: list[Any]) -> list[tuple[str, list[Any]]]:
    """FAILED jobs grouped by their reason, in the order each reason first appears: a broken
    batch environment fails every job of a batch with one long message, shown once."""
    groups: dict[str, list[Any]] = {}
    for failure in failures:
        groups.setdefault(str(failure.reason), []).append(failure)
    return list(groups.items())


def _print_status(client: Any, campaign: str | None, wide: bool = False) -> int:
    """Print the status table and the failures, one line per cause; returns the number of
    FAILED jobs."""
    from rich.markup import escape

    from matdx.cli.tables import print_table, status_table
    from matdx.store.models import JobState

    statuses = client.status(campaign)
    print_table(status_table(statuses, wide), wide)
    failed = 0
    for status in statuses:
        failed_here = status.counts.get(JobState.FAILED, 0)
        failed += failed_here
        for reason, group in _failures_by_reason(status.failures):
            first = group[0]
            if len(group) == 1:
                console.print(
                    f"[red]FAILED[/red] {escape(status.name)} · {escape(str(first.workflow))} · "
                    f"{escape(first.name)} ({first.job_id[:8]}) after {first.attempts} "
                    f"attempt(s): {escape(reason)}",
                    highlight=False,
                )
                continue
            shown = ", ".join(f"{escape(f.name)} ({f.job_id[:8]})" for f in group[:MAX_JOBS_NAMED])
            more = f" and {len(group) - MAX_JOBS_NAMED} more" if len(group) > MAX_JOBS_NAMED else ""
            console.print(
                f"[red]FAILED[/red] {escape(status.name)} · {len(group)} jobs, the same cause: "
                f"{escape(reason)}\n  jobs: {shown}{more}",
                highlight=False,
            )
        if failed_here > len(status.failures):
            console.print(f"{status.name}: {failed_here - len(status.failures)} more FAILED "
                          "job(s) not listed here", highlight=False)
        if status.blocked:
            console.print(
                f"{status.name}: {status.blocked} job(s) wait on failed or cancelled "
                "jobs and will not start",
                highlight=False,
            )
    return failed


@app.command()
def status(
    campaign: Annotated[str | None, typer.Argument(
        metavar="CAMPAIGN", help="campaign name or id prefix (default: all)")] = None,
    home: Home = None,
    wide: Wide = False,
) -> None:
    """Jobs by state for each campaign, and failures with their reasons."""
    _print_status(remote_client() or _existing_client(home), campaign, wide)


@app.command()
def show(
    identifier: Annotated[str, typer.Argument(
        metavar="ID", help="job, record or campaign (id prefix, or a campaign's name)")],
    home: Home = None,
    as_json: Annotated[bool, typer.Option("--json", help="the full record (or job, or "
                                          "campaign) as JSON")] = False,
) -> None:
    """A record's summary (structure, method, results, provenance, access, artifacts), a
    job with its attempts, or a campaign."""
    from matdx.cli.summary import print_summary

    remote = remote_client()  # $MATDX_URL: a record from the service, printed the same
    shown = remote.show_record(identifier) if remote else _existing_client(home).show(identifier)
    if as_json:
        sys.stdout.write(json.dumps(shown, default=str, indent=2, ensure_ascii=False) + "\n")
        return
    print_summary(console, shown)


# Columns of `matdx results` that say which result a row is; the others are the results.
RESULT_CONTEXT = ("workflow", "job", "formula", "method", "reused", "record")


def _result_rows(client: Any, campaign: str) -> list[dict[str, Any]]:
    from matdx.store.records import method_label
    from matdx.workflows.campaign import available_recipes
    from matdx.workflows.serialization import decode

    recipes = available_recipes()
    rows = []
    for result in client.results(campaign):
        output = decode(result["output"])
        scalars = output if isinstance(output, dict) else {"output": output}
        summary = getattr(recipes.get(result["recipe"]), "summary", None)
        keys = summary or [k for k, v in scalars.items() if isinstance(v, int | float | str)]
        rows.append(
            {
                "recipe": result["recipe"],
                "workflow": result["workflow"],
                "job": result["job"],
                "formula": result["formula"],
                "method": method_label(result["code"], result["functional"],
                                       result["potential"]),
                **{
                    k: scalars.get(k) for k in keys if isinstance(scalars.get(k), int | float | str)
                },
                "reused": result["reused"],
                "record": result["record_id"][:8],
            }
        )
    return rows


@app.command()
def results(campaign: Campaign, home: Home = None, fmt: Format = OutputFormat.table,
            wide: Wide = False) -> None:
    """Final results of each workflow of a campaign."""
    from matdx.cli.tables import print_table, rows_table, rows_text

    rows = _result_rows(remote_client() or _client(home), campaign)
    if fmt == OutputFormat.table:
        recipes = dict.fromkeys(r["recipe"] for r in rows)
        for recipe in recipes:
            group = [{k: v for k, v in r.items() if k != "recipe"}
                     for r in rows if r["recipe"] == recipe]
            values = [k for k in group[0] if k not in RESULT_CONTEXT]
            print_table(rows_table(group, title=recipe, wide=wide,
                                   priority=["formula", "workflow", *values, "method",
                                             "record", "job", "reused"],
                                   shrink=[k for k in group[0] if any(
                                       isinstance(r.get(k), str) for r in group)]), wide)
    else:
        sys.stdout.write(rows_text(rows, fmt.value))


@app.command()
def rerun(
    identifiers: Annotated[list[str], typer.Argument(metavar="IDS",
                                                     help="jobs or campaigns")],
    home: Home = None,
    failed: Annotated[bool, typer.Option(help="only the FAILED jobs among them")] = False,
) -> None:
    """Put failed, cancelled or completed jobs back in line with a fresh retry budget."""
    count = _client(home).rerun(identifiers, failed_only=failed)
    console.print(f"{count} job(s) put back in line; `matdx run` or the next tick starts them")


@app.command()
def cancel(
    identifiers: Annotated[list[str], typer.Argument(metavar="IDS",
                                                     help="jobs or campaigns")],
    home: Home = None,
) -> None:
    """Cancel jobs (and everything below them)."""
    count = _client(home).cancel(identifiers)
    console.print(f"{count} job(s) cancelled")


@app.command()
def analyze(
    campaign: Campaign,
    home: Home = None,
    kernel: Annotated[str, typer.Option(help="rdf, msd, vacf, sq, angles")] = "rdf,msd",
    scheduler: Annotated[
        str | None, typer.Option(help="address of a running Dask scheduler (tcp://host:8786)")
    ] = None,
    workers: Annotated[int, typer.Option(help="workers of the local Dask cluster")] = 2,
    equilibration: Annotated[float | None, typer.Option(
        help="leading fraction of frames left out (default: the frames before the potential "
        "energy and temperature are steady)")] = None,
) -> None:
    """Analyse every trajectory of a campaign with the kernels, on Dask; results become
    records linked to the trajectories they read. Trajectories already analysed the same way
    are skipped."""
    from matdx.analysis import plan_analysis

    client = _client(home)
    campaign_id = client.resolve_campaign(campaign)
    name = client.status(campaign_id)[0].name
    executor = {"type": "dask", "scheduler": scheduler} if scheduler else \
        {"type": "dask", "cluster": "local", "workers": workers}
    kernels = [k.strip() for k in kernel.split(",") if k.strip()]
    try:
        plan = plan_analysis(client.store, campaign_id, name, kernels, executor,
                             equilibration_fraction=equilibration, requester=client.identity())
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--kernel") from error
    console.print(f"{plan.trajectories} trajectories in {name}; {plan.already_done} already "
                  f"analysed with {'+'.join(kernels)}")
    if plan.graph is None:
        console.print("nothing new to compute")
        return
    analysis_id = client.submit(plan.graph)
    _run_with_progress(client, analysis_id, 0.25)
    _print_status(client, analysis_id)


def _default_text(info: Any) -> str:
    """A setting's default as a user writes it in a campaign file ("required" if none)."""
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if isinstance(value, dict | list | tuple) and not value:
        return "{}" if isinstance(value, dict) else "[]"
    return f"{value:g}" if isinstance(value, float) else str(value)


@app.command()
def recipes(wide: Wide = False) -> None:
    """The recipes campaign files can name, with their settings."""
    from matdx.cli.tables import print_table, rows_table
    from matdx.workflows.campaign import available_recipes

    rows = []
    for name, maker in sorted(available_recipes().items()):
        for field, info in maker.model_fields.items():
            rows.append(
                {
                    "recipe": name,
                    "setting": field,
                    "default": _default_text(info),
                    "description": info.description or "",
                }
            )
    print_table(rows_table(rows, title="recipes", wide=wide,
                           shrink=["default", "description"]), wide)


@app.command()
def demo(
    home: Home = None,
    workers: Annotated[int | None, typer.Option(help="local worker processes")] = None,
) -> None:
    """Run the built-in demo campaign (EMT: EOS of 7 metals, MD of Cu) and plot it."""
    from matdx.cli.tables import rows_table
    from matdx.demo import DEMO_CAMPAIGN, demo_tables, write_plots
    from matdx.workflows.campaign import load_campaign

    graph = load_campaign(DEMO_CAMPAIGN)
    client = _client(home, workers)
    campaign_id = client.submit(graph)
    console.print(f"demo campaign {campaign_id} in {client.home.absolute()}")
    _run_with_progress(client, campaign_id, 0.25)
    results = client.results(campaign_id)
    tables = demo_tables(results)
    console.print(rows_table(tables["eos"], title="Equations of state (EMT, Birch–Murnaghan)"))
    console.print(rows_table(tables["md"], title="Diffusion in Cu (EMT, Langevin NVT)",
                             shrink=["diffusion"]))
    plots = write_plots(results, client.home / "plots")
    console.print("plots: " + ", ".join(str(p) for p in plots))
    _print_status(client, campaign_id)


@store_app.command("verify")
def store_verify(
    home: Home = None,
    repair: Annotated[
        bool,
        typer.Option("--repair", help="refetch missing or corrupt objects from run directories "
                     "that still hold their bytes"),
    ] = False,
) -> None:
    """Re-hash every artifact; exit 1 if one is missing or corrupt (and, with --repair, could
    not be refetched)."""
    from matdx.store.integrity import repair_artifacts, verify_artifacts

    store = _client(home).store
    report = repair_artifacts(store) if repair else verify_artifacts(store)
    for label, shas in (("missing", report.missing), ("corrupt", report.corrupt)):
        for sha in shas:
            records = ", ".join(r[:8] for r in report.referenced_by.get(sha, []))
            fixed = report.repaired.get(sha)
            note = f"; repaired from {fixed}" if fixed else ""
            console.print(f"[red]{label}[/red] {sha} (records: {records or 'none'}){note}")
    console.print(
        f"{report.checked} artifact(s) checked: {len(report.missing)} missing, "
        f"{len(report.corrupt)} corrupt"
        + (f", {len(report.repaired)} repaired" if repair else "")
    )
    if not report.ok:
        raise typer.Exit(1)


register_record_commands(app, store_app)  # query, records, export, import, store gc
app.command("plot")(plot_record)


def _usage_name(argument: Any) -> str:
    """An argument as usage lines conventionally show it: ``FILE``, ``[CAMPAIGN]``,
    ``IDS...`` (this typer writes ``{file}``)."""
    name = str(argument.metavar or argument.name or "").upper()
    if argument.nargs != 1 and not name.endswith("..."):
        name += "..."
    return name if argument.required else f"[{name}]"


def _full_summaries(command: Any) -> None:
    """Give every command its whole first paragraph as summary, so that command lists wrap
    it instead of cutting it at 45 characters with "..."."""
    for sub in getattr(command, "commands", {}).values():
        if sub.short_help is None and sub.help:
            sub.short_help = " ".join(sub.help.strip().split("\n\n")[0].split())
        _full_summaries(sub)


@functools.cache
def _command() -> Any:
    """The click command of the app, built once per process (building it takes a while)."""
    from typer.core import TyperArgument

    TyperArgument._usage_display_name = _usage_name  # type: ignore[method-assign]
    command = typer.main.get_command(app)
    _full_summaries(command)
    return command


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    from pydantic import ValidationError

    from matdx.store.queries import AmbiguousIdentifier
    from matdx.workflows.campaign import CampaignError
    from matdx.workflows.structures import StructureError
    from matdx.workflows.submit import SubmitError

    try:
        # returns the code of a typer.Exit
        code = _command()(prog_name="matdx", standalone_mode=False)
    except (
        CampaignError,
        StructureError,
        SubmitError,
        AmbiguousIdentifier,
        LookupError,
        PermissionError,
        ValidationError,
        RemoteError,
    ) as error:
        from rich.markup import escape

        # Values from the user's file are printed literally: `[/bold]` or `data[raw]/Cu.cif`
        # in a message is text, not markup.
        err_console.print(f"[bold red]error:[/bold red] {escape(str(error))}", highlight=False)
        sys.exit(2)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except Exception as error:
        # Usage errors of the command-line parser (typer vendors its own click, so match by
        # behaviour rather than by class): show the usage message, exit with its code.
        if hasattr(error, "show") and isinstance(getattr(error, "exit_code", None), int):
            error.show()
            sys.exit(error.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
