"""Commands on records: ``matdx query``, ``matdx records ...``, ``matdx export FORMAT``,
``matdx import`` and ``matdx store gc``.

Thin commands over :class:`matdx.client.Client`; the selection options are shared by
``query`` and every export. Who asks is ``--user`` / ``--group`` (default ``$MATDX_USER``,
the login name, and ``$MATDX_GROUPS``).
"""

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from matdx.cli.options import Format, Home, OutputFormat
from matdx.cli.tables import console, err_console

__all__ = ["export_app", "records_app", "register"]

records_app = typer.Typer(
    help="Records: who may see them, and their history.", no_args_is_help=True
)
export_app = typer.Typer(
    help="Export the records you may take out of the store (export-controlled ones never leave).",
    no_args_is_help=True,
)

# -- shared options -------------------------------------------------------------------------

Elements = Annotated[
    list[str] | None,
    typer.Option(
        "--elements", "-e", help="has all of these elements (comma-separated or repeated)"
    ),
]
AnyElements = Annotated[
    list[str] | None, typer.Option("--any-elements", help="has at least one of these elements")
]
OnlyElements = Annotated[
    list[str] | None, typer.Option("--only-elements", help="has no element outside these")
]
Formula = Annotated[str | None, typer.Option(help="reduced formula, any element order (Cu2O)")]
Sites = Annotated[str | None, typer.Option("--nsites", help="number of sites, min:max (4:16, 4:)")]
Calculation = Annotated[
    list[str] | None, typer.Option("--calculation", help="static, relax, md, eos-fit, ...")
]
Code = Annotated[list[str] | None, typer.Option("--code", help="emt, espresso, lammps, ...")]
Functional = Annotated[
    list[str] | None, typer.Option("--functional", help="PBE, LDA, EMT, ... (any case)")
]
Potential = Annotated[
    list[str] | None,
    typer.Option("--potential", help="interatomic potential naming this text, e.g. a file name"),
]
Tags = Annotated[list[str] | None, typer.Option("--tag", help="has this tag (repeatable)")]
Ranges = Annotated[
    list[str] | None,
    typer.Option(
        "--range",
        help="property range NAME=min:max, e.g. band_gap=0.5:2 (eV), energy_per_atom=:-3 "
        "(eV/atom), B0_GPa=100: (bulk modulus, GPa); repeatable",
    ),
]
CampaignOption = Annotated[
    list[str] | None, typer.Option("--campaign", help="campaign name or id (repeatable)")
]
AccessLevels = Annotated[
    list[str] | None, typer.Option("--access", help="private, group, embargoed or public")
]
Owner = Annotated[str | None, typer.Option("--owner", help="records of this owner")]
Status = Annotated[str | None, typer.Option("--status", help="completed or failed")]
User = Annotated[
    str | None,
    typer.Option(
        "--user",
        envvar="MATDX_USER",
        help="your name, checked against who you are (SQLite: the account running matdx)",
    ),
]
Groups = Annotated[
    list[str] | None,
    typer.Option("--group", help="a group (project) you belong to; default $MATDX_GROUPS"),
]
Admin = Annotated[
    bool,
    typer.Option(
        "--admin",
        help="act as store administrator (PostgreSQL: members of the role matdx_admin only)",
    ),
]
Licenses = Annotated[
    list[str] | None,
    typer.Option("--license", help="export only records under this SPDX licence (repeatable)"),
]


class ExportFormat(StrEnum):
    optimade = "optimade"
    extxyz = "extxyz"
    ase = "ase"
    parquet = "parquet"
    archive = "archive"


class UserError(Exception):
    """A bad option value; printed as one line, exit code 2."""


@contextmanager
def _user_errors() -> Iterator[None]:
    """Errors a user can fix become one line on stderr and exit code 2."""
    from matdx.store.archive import ArchiveError
    from matdx.store.governance import NotOwner
    from matdx.store.licenses import LicenseError
    from matdx.store.lock import StoreBusy
    from matdx.store.records import RecordSchemaError
    from matdx.store.search import QueryError

    try:
        yield
    except (
        UserError,
        QueryError,
        LicenseError,
        RecordSchemaError,
        ArchiveError,
        NotOwner,
        StoreBusy,
        FileExistsError,
        LookupError,
    ) as error:
        from rich.markup import escape

        # printed literally: `pip install 'matdx[mlip]'` or a path with [brackets] is text
        err_console.print(f"[bold red]error:[/bold red] {escape(str(error))}", highlight=False)
        raise typer.Exit(2) from error


def _split(values: list[str] | None) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def _requester(client: Any, user: str | None, groups: list[str] | None, admin: bool) -> Any:
    """The authenticated user (``--user`` may only name them; ``--admin`` needs the right)."""
    return client.identity(user, _split(groups) if groups is not None else None, admin=admin)


def _criteria(
    elements: list[str] | None,
    any_elements: list[str] | None,
    only_elements: list[str] | None,
    formula: str | None,
    nsites: str | None,
    calculation: list[str] | None,
    code: list[str] | None,
    tags: list[str] | None,
    ranges: list[str] | None,
    campaign: list[str] | None,
    access: list[str] | None,
    owner: str | None,
    status: str | None,
    functional: list[str] | None = None,
    potential: list[str] | None = None,
) -> dict[str, Any]:
    """Query criteria from the shared options (validated later by RecordQuery)."""
    from matdx.store.search import parse_range

    properties = {}
    for text in ranges or []:
        name, sep, bounds = text.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--range {text!r}: expected NAME=min:max, e.g. band_gap=0.5:2")
        properties[name.strip()] = parse_range(bounds).model_dump()
    criteria: dict[str, Any] = {
        "elements": _split(elements),
        "any_elements": _split(any_elements),
        "only_elements": _split(only_elements),
        "formula": formula,
        "nsites": parse_range(nsites).model_dump() if nsites else None,
        "calculation": _split(calculation),
        "code": _split(code),
        "functional": _split(functional),
        "potential": [p.strip() for p in potential or [] if p.strip()],
        "tags": list(tags or []),
        "properties": properties,
        "access": _split(access),
        "owner": owner,
        "status": status,
    }
    if campaign:
        criteria["campaign"] = list(campaign)
    return criteria


def _client(home: Path | None) -> Any:
    from matdx.client import Client

    return Client(home)


def _remote(user: str | None, groups: list[str] | None, admin: bool) -> Any:
    """The service ``$MATDX_URL`` names (None: the local store); there the token says who
    the user is, so ``--user``, ``--group`` and ``--admin`` are refused."""
    from matdx.remote import remote_client

    remote = remote_client()
    if remote is not None and (user or groups or admin):
        raise UserError(
            "--user/--group/--admin: through a service ($MATDX_URL) the token ($MATDX_TOKEN) "
            "says who you are"
        )
    return remote


# -- matdx query ----------------------------------------------------------------------------


def query(
    elements: Elements = None,
    any_elements: AnyElements = None,
    only_elements: OnlyElements = None,
    formula: Formula = None,
    nsites: Sites = None,
    calculation: Calculation = None,
    code: Code = None,
    functional: Functional = None,
    potential: Potential = None,
    tag: Tags = None,
    ranges: Ranges = None,
    campaign: CampaignOption = None,
    access: AccessLevels = None,
    owner: Owner = None,
    status: Status = None,
    limit: Annotated[int, typer.Option(help="records per page")] = 50,
    after: Annotated[str | None, typer.Option(help="cursor printed under the last page")] = None,
    count: Annotated[bool, typer.Option(help="also count all matching records")] = False,
    user: User = None,
    group: Groups = None,
    admin: Admin = False,
    home: Home = None,
    fmt: Format = OutputFormat.table,
) -> None:
    """Find records by elements, formula, sites, calculation, code, tags, property ranges."""
    from matdx.cli.tables import rows_table, rows_text

    with _user_errors():
        criteria = _criteria(
            elements, any_elements, only_elements, formula, nsites, calculation, code, tag,
            ranges, campaign, access, owner, status, functional, potential,
        )  # fmt: skip
        remote = _remote(user, group, admin)
        if remote is not None:  # $MATDX_URL: the service's /records, printed the same
            from matdx.store.search import Page

            items, next_after, total = remote.query(
                limit=limit, after=after, count=count, **criteria
            )
            page = Page(items, next_after)
        else:
            client = _client(home)
            requester = _requester(client, user, group, admin)
            page = client.query(requester=requester, limit=limit, after=after, **criteria)
            total = client.count(requester=requester, **criteria) if count else None
    rows = [_summary_row(item) for item in page.items]
    if fmt == OutputFormat.json:
        sys.stdout.write(
            json.dumps(
                {"records": page.items, "next_after": page.next_after, "count": total},
                indent=2,
                default=str,
            )
            + "\n"
        )
        return
    if fmt == OutputFormat.csv:
        sys.stdout.write(rows_text(rows, "csv"))
        return
    console.print(rows_table(rows, title=f"{len(rows)} record(s)"))
    if total is not None:
        console.print(f"{total} matching record(s) in all")
    if page.next_after:
        console.print(f"more: add --after {page.next_after}", highlight=False)


def _summary_row(item: dict[str, Any]) -> dict[str, Any]:
    from matdx.store.records import method_label

    return {
        "record": item["record_id"],
        "formula": item["formula"],
        "nsites": item["nsites"],
        "code": item["code"],
        "method": method_label(None, item.get("functional"), item.get("potential")),
        "calculation": item["calculation"],
        "status": item["status"],
        "energy_per_atom": item["energy_per_atom"],
        **item["properties"],
        "access": item["access"],
        "owner": item["owner"],
        "license": item["license"],
    }


# -- matdx records ... -----------------------------------------------------------------------


@records_app.command("set-access")
def set_access(
    identifiers: Annotated[list[str], typer.Argument(
        metavar="IDS", help="records (id prefixes) or campaigns")],
    access: Annotated[
        str | None, typer.Option("--access", help="private, group, embargoed or public")
    ] = None,
    embargo_until: Annotated[
        str | None, typer.Option(help="end of the embargo, ISO date or time (UTC)")
    ] = None,
    license: Annotated[
        str | None, typer.Option("--license", help="SPDX licence expression ('' removes it)")
    ] = None,
    export_control: Annotated[
        bool | None,
        typer.Option("--export-control/--no-export-control", help="never exported if set"),
    ] = None,
    owner: Annotated[str | None, typer.Option(help="new owner")] = None,
    project: Annotated[str | None, typer.Option(help="new project (group)")] = None,
    reason: Annotated[str, typer.Option(help="why, for the audit log")] = "",
    user: User = None,
    group: Groups = None,
    admin: Admin = False,
    home: Home = None,
) -> None:
    """Change owner, project, access level, embargo, licence or export control, with an
    audit entry. A campaign's change also applies to its future records."""
    changes: dict[str, Any] = {
        key: value
        for key, value in {
            "access": access,
            "owner": owner,
            "project": project,
            "export_control": export_control,
        }.items()
        if value is not None
    }
    with _user_errors():
        if embargo_until is not None:
            try:
                changes["embargo_until"] = datetime.fromisoformat(embargo_until)
            except ValueError as err:
                raise UserError(
                    f"--embargo-until {embargo_until!r}: expected an ISO date such as 2027-06-30"
                ) from err
        if license is not None:
            changes["license"] = license or None
        if not changes:
            raise UserError("nothing to change: give --access, --license, --owner, ... ")
        from pydantic import ValidationError

        try:
            client = _client(home)
            changed = client.set_access(
                identifiers,
                requester=_requester(client, user, group, admin),
                reason=reason,
                **changes,
            )
        except ValidationError as err:
            problems = "; ".join(
                f"--{'-'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()
            )
            raise UserError(problems.replace("_", "-")) from err
    console.print(f"{changed} record(s) changed", highlight=False)


@records_app.command("history")
def history(
    identifier: Annotated[str, typer.Argument(metavar="ID",
                                              help="record (id prefix) or campaign")],
    home: Home = None,
) -> None:
    """The audit log of a record or campaign: who changed its governance, when and why."""
    from matdx.cli.tables import rows_table

    entries = _client(home).history(identifier)
    console.print(
        rows_table(
            [
                {
                    "at": e["at"],
                    "actor": e["actor"],
                    "action": e["action"],
                    "change": ", ".join(
                        f"{k}: {e['before'].get(k)} → {v}"
                        for k, v in e["after"].items()
                        if e["before"].get(k) != v
                    ),
                    "reason": e["reason"],
                }
                for e in entries
            ],
            title="history",
        )
    )


# -- matdx export FORMAT ... ------------------------------------------------------------------


def _make_export_command(fmt: ExportFormat, what: str, target: str) -> None:
    def command(
        output: Annotated[Path, typer.Argument(metavar="OUTPUT", help=target)],
        elements: Elements = None,
        any_elements: AnyElements = None,
        only_elements: OnlyElements = None,
        formula: Formula = None,
        nsites: Sites = None,
        calculation: Calculation = None,
        code: Code = None,
        functional: Functional = None,
        potential: Potential = None,
        tag: Tags = None,
        ranges: Ranges = None,
        campaign: CampaignOption = None,
        access: AccessLevels = None,
        owner: Owner = None,
        status: Status = None,
        license: Licenses = None,
        split: Annotated[
            str, typer.Option(help="extxyz: train,validation,test shares")
        ] = "0.8,0.1,0.1",
        seed: Annotated[int, typer.Option(help="extxyz: seed of the split")] = 0,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="replace an existing output file")
        ] = False,
        user: User = None,
        group: Groups = None,
        admin: Admin = False,
        home: Home = None,
    ) -> None:
        with _user_errors():
            criteria = _criteria(
                elements, any_elements, only_elements, formula, nsites, calculation, code, tag,
                ranges, campaign, access, owner, status, functional, potential,
            )  # fmt: skip
            try:
                fractions = tuple(float(x) for x in split.split(","))
            except ValueError as err:
                raise UserError(f"--split {split!r}: expected three numbers") from err
            if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-9:
                raise UserError(f"--split {split!r}: expected three shares adding up to 1")
            extra = {"fractions": fractions, "seed": seed} if fmt == ExportFormat.extxyz else {}
            remote = _remote(user, group, admin)
            if remote is not None:  # $MATDX_URL: the service's /exports, written the same
                if license:
                    raise UserError("--license: a service's export does not take it")
                result = remote.export(fmt.value, output, overwrite=overwrite, **criteria)
                console.print(_describe(fmt, output, result), highlight=False)
                return
            client = _client(home)
            result = client.export(
                fmt.value,
                output,
                requester=_requester(client, user, group, admin),
                licenses=license,
                overwrite=overwrite,
                **extra,
                **criteria,
            )
        console.print(_describe(fmt, output, result), highlight=False)

    command.__doc__ = f"Export {what} (filtered by access level, export control and licence)."
    export_app.command(fmt.value)(command)


def _describe(fmt: ExportFormat, output: Path, result: Any) -> str:
    if fmt == ExportFormat.extxyz:
        parts = ", ".join(
            f"{split} {result.records[split]} record(s) / {result.frames[split]} frame(s)"
            for split in result.frames
        )
        return f"{output}: {parts}"
    if fmt == ExportFormat.archive:
        return (
            f"{output}: {result.records} record(s), {result.objects} artifact(s), "
            f"{result.bytes} bytes"
        )
    return f"{output}: {result} record(s)"


_make_export_command(
    ExportFormat.optimade, "structures as OPTIMADE JSON Lines", "output .jsonl file"
)
_make_export_command(
    ExportFormat.extxyz,
    "configurations as extended XYZ for training interatomic potentials",
    "output directory (train.xyz, validation.xyz, test.xyz)",
)
_make_export_command(ExportFormat.ase, "final structures into an ASE database", "output .db file")
_make_export_command(ExportFormat.parquet, "scalar results as a Parquet table", "output .parquet")
_make_export_command(
    ExportFormat.archive, "records and artifacts as a portable archive", "output .tar or .tar.gz"
)


# -- matdx import, matdx store gc ---------------------------------------------------------------


def import_command(
    archive: Annotated[Path, typer.Argument(metavar="ARCHIVE",
                                            help="archive made by `matdx export archive`")],
    home: Home = None,
) -> None:
    """Load an archive into this store; records it already holds are skipped."""
    with _user_errors():
        report = _client(home).import_archive(archive)
    console.print(
        f"{report.records_added} record(s) added, {report.records_present} already present; "
        f"{report.objects_added} artifact(s) added, {report.objects_present} already present",
        highlight=False,
    )
    for record_id in report.conflicts:
        err_console.print(
            f"[yellow]conflict[/yellow] record {record_id}: this store holds another record "
            "with that id; not imported",
            highlight=False,
        )
    if report.conflicts:
        raise typer.Exit(1)


def store_gc(
    dry_run: Annotated[bool, typer.Option(help="only report what would be removed")] = False,
    grace: Annotated[
        float, typer.Option(help="spare objects written less than this many seconds ago")
    ] = 3600.0,
    home: Home = None,
) -> None:
    """Remove artifact objects that no record references (never a referenced one)."""
    with _user_errors():
        report = _client(home).gc(dry_run=dry_run, grace_s=grace)
    verb = "would remove" if dry_run else "removed"
    console.print(
        f"{report.objects} object(s), {report.referenced} referenced; {verb} "
        f"{len(report.removed)} ({report.freed_bytes} bytes); spared {len(report.spared)} "
        f"recent unreferenced object(s)",
        highlight=False,
    )


def register(app: typer.Typer, store_app: typer.Typer) -> None:
    """Add these commands to the ``matdx`` app and its ``store`` sub-app."""
    app.add_typer(records_app, name="records")
    app.add_typer(export_app, name="export")
    app.command("query")(query)
    from matdx.cli.fireworks import import_app

    app.add_typer(import_app(import_command), name="import")  # import ARCHIVE | fireworks
    store_app.command("gc")(store_gc)
