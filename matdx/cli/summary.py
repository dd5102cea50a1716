"""What ``matdx show`` prints: a record, a job or a campaign as a short summary.

A record's summary has the sections a scientist reads first: structure, method, results (with
units), provenance, access and artifacts; ``matdx show --json`` prints the full document.
The functions take the plain data of :meth:`matdx.client.Client.show` (a local store or a
remote one) and return sections of (label, text) pairs; :func:`print_summary` prints them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from matdx.cli.tables import format_number

__all__ = ["Section", "print_summary", "summary_sections"]

Section = tuple[str, list[tuple[str, str]]]

EV_PER_A3_IN_GPA = 160.21766208  # 1 eV/Å³ in GPa
# Units of property names that do not end in their unit (matdx's EOS fit, relaxations).
KNOWN_UNITS = {"E0": "eV", "V0": "Å³", "B0": "eV/Å³", "volume": "Å³", "max_force": "eV/Å",
               "E0_per_atom": "eV/atom", "V0_per_atom": "Å³/atom", "temperature_K": "K",
               "rms_residual": "eV"}
# Unit suffixes of property names, longest first: B0_GPa, D_cm2_s, fit_window_fs, ...
SUFFIX_UNITS = (("_cm2_s", "cm²/s"), ("_per_atom", "/atom"), ("_GPa", "GPa"), ("_THz", "THz"),
                ("_eV", "eV"), ("_A3", "Å³"), ("_A2", "Å²"), ("_fs", "fs"), ("_ps", "ps"),
                ("_A", "Å"), ("_K", "K"), ("_s", "s"))
ERROR_SUFFIXES = ("_stderr", "_err")


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_number(value, 6)
    return str(value)


def _unit(name: str) -> str:
    if name in KNOWN_UNITS:
        return KNOWN_UNITS[name]
    for suffix, unit in SUFFIX_UNITS:  # B0_GPa, or B0_GPa_half_range
        if name.endswith(suffix) or f"{suffix}_" in name:
            return unit
    return ""


def _short(identifier: Any) -> str:
    return str(identifier)[:8] if identifier else "–"


def _size(n_bytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return str(n_bytes)


def _structure(system: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    if not system:
        return [("structure", "none recorded")]
    import numpy as np

    rows = [("formula", f"{system['chemical_formula_hill']} "
                        f"({system['chemical_formula_reduced']} reduced), "
                        f"{system['nsites']} site{'s' if system['nsites'] != 1 else ''}")]
    cell = np.asarray(system["lattice_vectors"], dtype=float)
    periodic = system.get("nperiodic_dimensions", 3)
    if cell.shape == (3, 3) and periodic:
        lengths = np.linalg.norm(cell, axis=1)
        angles = [math.degrees(math.acos(np.clip(
            cell[i] @ cell[j] / (lengths[i] * lengths[j]), -1, 1)))
            for i, j in ((1, 2), (0, 2), (0, 1))] if lengths.all() else [0.0] * 3
        rows.append(("cell", "a, b, c = " + ", ".join(f"{x:.4f}" for x in lengths) + " Å; "
                     "α, β, γ = " + ", ".join(f"{x:.2f}" for x in angles) + "°"))
        rows.append(("volume", f"{abs(np.linalg.det(cell)):.4f} Å³ "
                     f"({periodic} periodic dimension{'s' if periodic != 1 else ''})"))
    return rows


def _method(method: Mapping[str, Any]) -> list[tuple[str, str]]:
    code = method.get("code") or "–"
    if method.get("code_version"):
        code += f" ({method['code_version']})"
    rows = [("code", code)]
    for key in ("calculation", "functional", "potential", "protocol"):
        if method.get(key):
            rows.append((key, str(method[key])))
    for key in ("basis", "kpoints", "smearing", "spin"):
        if method.get(key):
            rows.append((key, ", ".join(f"{k}={_number(v)}" for k, v in method[key].items())))
    if method.get("pseudopotentials"):
        rows.append(("pseudopotentials", ", ".join(
            str(p.get("file") or p.get("name") or p.get("element")) for p in
            method["pseudopotentials"])))
    parameters = method.get("parameters") or {}
    scalars = {k: v for k, v in parameters.items() if isinstance(v, int | float | str | bool)}
    if scalars:
        rows.append(("parameters", ", ".join(f"{k}={_number(v)}" for k, v in scalars.items())))
    return rows


def _quantity(value: Any, unit: str, error: Any = None) -> str:
    text = _number(value)
    if isinstance(error, int | float) and not isinstance(error, bool):
        text += f" ± {format_number(float(error), 2)}"
    return f"{text} {unit}".strip()


def _results(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, unit in (("energy", "eV"), ("energy_per_atom", "eV/atom"), ("band_gap", "eV"),
                      ("fermi_level", "eV"), ("total_magnetization", "μB")):
        if results.get(key) is not None:
            rows.append((key, _quantity(results[key], unit)))
    forces = results.get("forces")
    if forces:
        largest = max(math.sqrt(sum(c * c for c in f)) for f in forces)
        rows.append(("largest force", _quantity(largest, "eV/Å")))
    stress = results.get("stress")
    if stress:
        # ASE's sign: negative under compression, so the pressure is minus the mean
        pressure = -(stress[0][0] + stress[1][1] + stress[2][2]) / 3 * EV_PER_A3_IN_GPA
        rows.append(("pressure", _quantity(pressure, "GPa")))
    if results.get("converged") is not None:
        rows.append(("converged", _number(results["converged"])))
    if results.get("md"):
        rows.append(("md", ", ".join(f"{k} {_quantity(v, _unit(k))}"
                                     for k, v in results["md"].items()
                                     if isinstance(v, int | float | str))))
    properties = results.get("properties") or {}
    for name, value in properties.items():
        if name.endswith(ERROR_SUFFIXES) or isinstance(value, list | dict) or value is None:
            continue
        if isinstance(value, str):
            rows.append((name, value))
            continue
        error = next((properties[name + s] for s in ERROR_SUFFIXES if name + s in properties),
                     None)
        rows.append((name, _quantity(value, _unit(name), error)))
    data = results.get("data")
    if isinstance(data, Mapping):
        arrays = [f"{k} ({len(v)})" for k, v in data.items() if isinstance(v, list)]
        if arrays:
            rows.append((f"data ({data.get('kind', 'recipe')})", ", ".join(arrays)))
    return rows or [("results", "none")]


def _provenance(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    run = record.get("run") or {}
    rows = [
        ("status", run.get("status", "–")),
        ("job", f"{record.get('job_name')} {_short(record.get('job_id'))}, attempt "
                f"{record.get('attempt')}"),
        ("campaign", f"{_short(record.get('campaign_id'))}, workflow "
                     f"{_short(record.get('workflow_id'))}"),
    ]
    if record.get("parents"):
        rows.append(("inputs from", ", ".join(_short(p) for p in record["parents"])))
    if record.get("retry_of"):
        rows.append(("retry of", _short(record["retry_of"])))
    if record.get("input_hash"):
        rows.append(("input hash", f"{record['input_hash'][:16]}…"))
    where = run.get("host") or "–"
    if run.get("scheduler_job_id"):
        where += f", scheduler job {run['scheduler_job_id']}"
    rows.append(("ran on", where))
    if run.get("started_at"):
        took = (f" ({format_number(run['walltime_s'], 3)} s)"
                if run.get("walltime_s") is not None else "")
        rows.append(("started", f"{run['started_at']}{took}"))
    versions = run.get("versions") or {}
    if versions:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    if run.get("corrections"):
        rows.append(("corrections", f"{len(run['corrections'])} applied"))
    for warning in run.get("warnings") or []:
        rows.append(("warning", str(warning)))
    error = run.get("error")
    if error:
        rows.append(("error", f"{error.get('type', '')}: {error.get('message', '')}".strip()))
    return rows


def _access(governance: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [("owner", governance.get("owner") or "–"),
            ("access", str(governance.get("access", "–")))]
    if governance.get("project"):
        rows.append(("project", governance["project"]))
    if governance.get("embargo_until"):
        rows.append(("embargo until", str(governance["embargo_until"])))
    rows.append(("license", governance.get("license") or "none given"))
    rows.append(("export control", "yes: never exported" if governance.get("export_control")
                 else "no"))
    return rows


def _artifacts(artifacts: list[Mapping[str, Any]]) -> list[tuple[str, str]]:
    if not artifacts:
        return [("artifacts", "none")]
    return [(a["name"], f"{a['media_type']}, {_size(a['size'])}, sha256 {a['sha256'][:12]}…")
            for a in artifacts]


def _record(data: Mapping[str, Any]) -> list[Section]:
    system = data.get("system") or {}
    method = data.get("method") or {}
    title = (f"record {data.get('record_id')}: {method.get('calculation') or data.get('job_name')}"
             f" of {system.get('chemical_formula_hill', '?')}")
    sections: list[Section] = [(title, [])]
    if "results" not in data:  # the discovery view of an embargoed record
        sections.append(("structure", _structure(data.get("system"))))
        sections.append(("access", [(k, str(v)) for k, v in data.items()
                                    if k not in ("kind", "system") and
                                    isinstance(v, str | int | float | bool)]))
        return sections
    sections += [
        ("structure", _structure(data.get("system"))),
        ("method", _method(method)),
        ("results", _results(data.get("results") or {})),
        ("provenance", _provenance(data)),
        ("access", _access(data.get("governance") or {})),
        ("artifacts", _artifacts(data.get("artifacts") or [])),
    ]
    return sections


def _job(data: Mapping[str, Any]) -> list[Section]:
    rows = [("state", str(data["state"]))]
    if data.get("reason"):
        rows.append(("reason", str(data["reason"])))
    rows += [
        ("function", str(data["function"])),
        ("attempt", f"{data['attempt']} (failures {data['failures']} of {data['retries']} "
                    f"retries; requeued {data['requeues']} times)"),
        ("record", _short(data.get("record_id"))),
    ]
    if data.get("reused_from"):
        rows.append(("reused from", _short(data["reused_from"])))
    if data.get("run_dir"):
        rows.append(("run directory", str(data["run_dir"])))
    if data.get("corrections"):
        rows.append(("corrections", f"{len(data['corrections'])} applied"))
    attempts = [(f"#{a['number']}", f"{a['state']}, record {_short(a.get('record_id'))}"
                 + (f", on {a['host']}" if a.get("host") else "")
                 + (f": {a['reason']}" if a.get("reason") else ""))
                for a in data.get("attempts") or []]
    return [(f"job {data['id']}: {data['name']}", []), ("job", rows),
            ("attempts", attempts or [("attempts", "none yet")])]


def _campaign(data: Mapping[str, Any]) -> list[Section]:
    spec = data.get("spec") or {}
    rows = [("created", str(data.get("created_at"))),
            ("owner", str(spec.get("owner") or "–"))]
    for key in ("description", "access", "license"):
        if spec.get(key):
            rows.append((key, str(spec[key])))
    executor = spec.get("executor") or {}
    if executor:
        rows.append(("executor", ", ".join(f"{k}={v}" for k, v in executor.items()
                                           if isinstance(v, str | int | float) and v != "")))
    studies = spec.get("studies") or []
    if studies:
        rows.append(("studies", ", ".join(str(s.get("recipe", "?")) for s in studies
                                          if isinstance(s, Mapping))))
    return [(f"campaign {data.get('name')} ({data.get('id')})", []), ("campaign", rows)]


def summary_sections(data: Mapping[str, Any]) -> list[Section]:
    """The summary of what :meth:`matdx.client.Client.show` returned, as sections; the first
    section's title is the heading and it has no rows."""
    kind = data.get("kind")
    if kind == "record":
        return _record(data)
    if kind == "job":
        return _job(data)
    return _campaign(data)


def print_summary(console: Console, data: Mapping[str, Any]) -> None:
    """Print :func:`summary_sections` of ``data``; user text is printed literally."""
    sections = summary_sections(data)
    heading, _ = sections[0]
    console.print(f"[bold]{escape(heading)}[/bold]", highlight=False)
    for title, rows in sections[1:]:
        console.print(f"[bold]{escape(title)}[/bold]", highlight=False)
        grid = Table.grid(padding=(0, 2), pad_edge=True)
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        for label, text in rows:
            grid.add_row(f"  {escape(label)}", escape(text))
        console.print(grid, highlight=False)
    if data.get("kind") == "record":
        console.print("[dim]the full record: matdx show ID --json[/dim]")
