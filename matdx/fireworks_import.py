"""Records from a FireWorks LaunchPad: bring a group's old FireWorks (and atomate) results home.

:func:`read_launchpad` reads, without touching a matdx store, every Firework that ended
(COMPLETED or FIZZLED) in the LaunchPad's workflows, with its last launch and, when the
database has an atomate-style ``tasks`` collection, the task document written from the
launch's directory; :func:`import_launchpad` turns them into records of the published schema
(:class:`matdx.store.records.CalculationRecord`) and inserts the new ones through the store's
record model, which validates and indexes every document.

One record per Firework launch:

* identity: ids derived from the LaunchPad (database name and hosts), the Firework id and
  the launch id (UUID 5), so importing twice adds nothing; ``job_name`` is the Firework's
  name, ``function`` its Firetasks (``fireworks:{{atomate....RunVaspCustodian}}``),
  ``input_hash`` the sha256 of its spec, ``attempt`` the launch's position;
* provenance: ``run.scheduler_job_id`` ``fireworks fw_id N launch_id M``, tags ``fireworks``
  and ``fw_id:N``, ``parents`` the records of the parent Fireworks (FireWorks links); host,
  launch directory and times of the launch;
* a FIZZLED launch is a failed record whose ``run.error`` holds the last line of FireWorks'
  stack trace;
* from a task document: the final structure (OPTIMADE fields), code and version, INCAR,
  k-points and POTCAR names, energy (eV), forces (eV/Å), stress (VASP's kBar, compression
  positive, converted to eV/Å³ in ASE's sign convention), band gap and Fermi level (eV);
* governance (owner, project, access, licence) as given on the command line.

Workflows that matdx itself put on the LaunchPad (the fireworks executor's batches) are
skipped: their results are in the store already.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ase.units import GPa
from sqlalchemy import select

from matdx.store.models import ProvenanceEdge, Record, utcnow
from matdx.store.records import (
    SCHEMA_VERSION,
    STRESS_CONVENTION,
    Governance,
    validate_document,
)
from matdx.store.store import Store
from matdx.store.system import optimade_structure
from matdx.workflows.records import matdx_version

__all__ = ["FireworkRun", "ImportReport", "import_launchpad", "read_launchpad", "record_of"]

NAMESPACE = uuid.UUID("6f0b6a1e-5d0c-4c55-9a43-6b1f4a0c2f17")  # matdx FireWorks imports
ENDED = ("COMPLETED", "FIZZLED")
KBAR_TO_EV_PER_A3 = 0.1 * GPa  # 1 kBar = 0.1 GPa, in eV/Å³


@dataclass
class FireworkRun:
    """One ended launch of a Firework, as read from the LaunchPad."""

    source: str  # the LaunchPad's identity: database name and hosts
    workflow: dict[str, Any]
    firework: dict[str, Any]
    launch: dict[str, Any]
    attempt: int
    parents: list[int]
    task: dict[str, Any] | None = None


@dataclass
class ImportReport:
    added: int = 0
    present: int = 0
    failed: int = 0  # records of FIZZLED launches among the added
    in_flight: int = 0  # Fireworks not ended (not imported)
    records: list[str] = field(default_factory=list)


def _identity(launchpad: Any) -> str:
    """The LaunchPad's database, independent of the file and of any credentials."""
    if launchpad.uri_mode:
        from pymongo.uri_parser import parse_uri

        hosts = ",".join(f"{h}:{p}" for h, p in parse_uri(launchpad.host)["nodelist"])
    else:
        hosts = f"{launchpad.host}:{launchpad.port}"
    return f"{launchpad.name}@{hosts}"


def _jsonable(value: Any) -> Any:
    """A MongoDB document as plain JSON (dates as ISO strings, ObjectIds as strings)."""
    from bson import json_util

    return json.loads(json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS))


def read_launchpad(launchpad_file: str | Path) -> Iterator[FireworkRun | str]:
    """Every ended launch of the LaunchPad's workflows, parents before children; the state
    of each Firework that has not ended is yielded as a plain string instead."""
    from matdx.workflows.executors.fireworks import open_launchpad

    with open_launchpad(launchpad_file) as launchpad:
        source = _identity(launchpad)
        db = launchpad.db
        has_tasks = "tasks" in db.list_collection_names()
        for workflow in db.workflows.find({}, {"_id": 0}).sort("nodes", 1):
            if (workflow.get("metadata") or {}).get("matdx_batch"):
                continue
            links = {int(k): [int(c) for c in v] for k, v in workflow["links"].items()}
            parents: dict[int, list[int]] = {int(n): [] for n in workflow["nodes"]}
            for parent, children in links.items():
                for child in children:
                    parents[child].append(parent)
            fireworks = {
                fw["fw_id"]: fw
                for fw in db.fireworks.find({"fw_id": {"$in": workflow["nodes"]}}, {"_id": 0})
            }
            launch_ids = [fw["launches"][-1] for fw in fireworks.values()
                          if fw["state"] in ENDED and fw.get("launches")]
            launches = {launch["launch_id"]: launch
                        for launch in db.launches.find({"launch_id": {"$in": launch_ids}},
                                                       {"_id": 0})}
            for fw_id in _parents_first(sorted(fireworks), parents):
                fw = fireworks[fw_id]
                if fw["state"] not in ENDED or not fw.get("launches"):
                    yield fw["state"]
                    continue
                launch = launches[fw["launches"][-1]]
                task = _task_of(db, launch) if has_tasks else None
                yield FireworkRun(
                    source=source,
                    workflow=_jsonable(workflow),
                    firework=_jsonable(fw),
                    launch=_jsonable(launch),
                    attempt=len(fw.get("archived_launches") or []) + len(fw["launches"]),
                    parents=sorted(parents.get(fw_id, [])),
                    task=_jsonable(task) if task is not None else None,
                )


def _parents_first(fw_ids: list[int], parents: Mapping[int, list[int]]) -> list[int]:
    ordered: list[int] = []
    done: set[int] = set()

    def visit(fw_id: int) -> None:
        if fw_id in done:
            return
        done.add(fw_id)
        for parent in parents.get(fw_id, []):
            visit(parent)
        ordered.append(fw_id)

    for fw_id in fw_ids:
        visit(fw_id)
    return [i for i in ordered if i in set(fw_ids)]


def _task_of(db: Any, launch: Mapping[str, Any]) -> dict[str, Any] | None:
    """The atomate task document of a launch: written from its directory (``dir_name``,
    ``host:/path`` or ``/path``), or naming its Firework (``fw_id``)."""
    directory = launch.get("launch_dir") or ""
    candidates = [directory, f"{launch.get('host')}:{directory}"]
    return db.tasks.find_one(
        {"$or": [{"dir_name": {"$in": candidates}}, {"fw_id": launch["fw_id"]}]},
        {"_id": 0},
        sort=[("last_updated", -1)],
    )


def _uuid(*parts: Any) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(str(p) for p in parts)))


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _record_id(source: str, fw_id: int, launch_id: int) -> str:
    return _uuid(source, "fw", fw_id, "launch", launch_id)


def record_of(run: FireworkRun, governance: Mapping[str, Any],
              parent_records: Mapping[int, str]) -> dict[str, Any]:
    """The record document of one launch (see the module docstring)."""
    fw, launch = run.firework, run.launch
    fw_id, launch_id = fw["fw_id"], launch["launch_id"]
    spec = fw.get("spec") or {}
    tasks = [t.get("_fw_name", "?") for t in spec.get("_tasks", [])]
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    state = launch.get("state", fw["state"])
    stored = ((launch.get("action") or {}).get("stored_data")) or {}
    error = None
    if state == "FIZZLED":
        trace = str((stored.get("_exception") or {}).get("_stacktrace") or "")
        lines = [line for line in trace.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else "FIZZLED without an error (lost run)"
        error = {"type": "FIZZLED", "message": last, "last_line": last, "kind": "program",
                 "traceback": trace}
    started = _time(launch.get("time_start"))
    finished = _time(launch.get("time_end"))
    document: dict[str, Any] = {
        "record_id": _record_id(run.source, fw_id, launch_id),
        "input_hash": hashlib.sha256(canonical.encode()).hexdigest(),
        "campaign_id": _uuid(run.source),
        "workflow_id": _uuid(run.source, "wf", min(run.workflow["nodes"])),
        "job_id": _uuid(run.source, "fw", fw_id),
        "job_name": str(fw.get("name") or f"fw {fw_id}")[:200],
        "function": "fireworks:" + ",".join(tasks),
        "attempt": run.attempt,
        "tags": ["fireworks", f"fw_id:{fw_id}"],
        "parents": sorted(parent_records[p] for p in run.parents if p in parent_records),
        "run": {
            "status": "failed" if state == "FIZZLED" else "completed",
            "matdx_version": matdx_version(),
            "host": str(launch.get("host") or ""),
            "scheduler_job_id": f"fireworks fw_id {fw_id} launch_id {launch_id}",
            "run_dir": launch.get("launch_dir"),
            "started_at": started,
            "finished_at": finished,
            "walltime_s": (finished - started).total_seconds() if started and finished else None,
            "error": error,
        },
        "governance": dict(governance),
    }
    if run.task is not None:
        document.update(_from_task(run.task))
    return document


def _from_task(task: Mapping[str, Any]) -> dict[str, Any]:
    """System, method and results of an atomate task document."""
    from pymatgen.core import Structure

    output = task.get("output") or {}
    inputs = task.get("input") or {}
    calcs = task.get("calcs_reversed") or [{}]
    found: dict[str, Any] = {}
    nsites = None
    if output.get("structure"):
        structure = Structure.from_dict(output["structure"])
        nsites = len(structure)
        found["system"] = optimade_structure(
            structure.lattice.matrix, structure.cart_coords,
            [site.specie.symbol for site in structure], structure.lattice.pbc,
        )
    potcars = inputs.get("potcar_spec") or []
    found["method"] = {
        "code": "vasp",
        "code_version": calcs[0].get("vasp_version"),
        "calculation": task.get("task_label") or task.get("task_type"),
        "functional": (inputs.get("parameters") or {}).get("GGA") or inputs.get("xc"),
        "pseudopotentials": [_potcar(p) for p in potcars],
        "kpoints": inputs.get("kpoints") or {},
        "parameters": inputs.get("incar") or {},
    }
    results: dict[str, Any] = {}
    if output.get("energy") is not None:
        results["energy"] = float(output["energy"])
        if output.get("energy_per_atom") is not None:
            results["energy_per_atom"] = float(output["energy_per_atom"])
        elif nsites:
            results["energy_per_atom"] = float(output["energy"]) / nsites
    if output.get("forces") is not None:
        results["forces"] = [[float(x) for x in row] for row in output["forces"]]
    if output.get("stress") is not None:
        results["stress"] = [[-float(x) * KBAR_TO_EV_PER_A3 for x in row]
                             for row in output["stress"]]
        results["stress_convention"] = STRESS_CONVENTION
    if output.get("bandgap") is not None:
        results["band_gap"] = float(output["bandgap"])
    efermi = (calcs[0].get("output") or {}).get("efermi")
    if efermi is not None:
        results["fermi_level"] = float(efermi)
    if task.get("task_id") is not None:
        results["properties"] = {"atomate_task_id": str(task["task_id"])}
    found["results"] = results
    return found


def _potcar(spec: Mapping[str, Any]) -> dict[str, str]:
    """A POTCAR of atomate's ``potcar_spec`` (``titel`` such as ``PAW_PBE Fe_pv 06Sep2000``,
    ``hash`` its md5): its element, name and hash, never the file."""
    title = str(spec.get("titel") or "")
    words = title.split()
    element = words[1].split("_")[0] if len(words) > 1 else ""
    return {"element": element, "name": title, "md5": str(spec.get("hash") or "")}


def import_launchpad(store: Store, launchpad_file: str | Path, *,
                     governance: Mapping[str, Any]) -> ImportReport:
    """Import the LaunchPad's ended Fireworks as records; those already imported are skipped.

    Raises
    ------
    ValueError
        For governance the record schema refuses (the message names the field), or a
        LaunchPad document that does not make a valid record; nothing is written then.
    """
    checked = Governance.model_validate(dict(governance)).model_dump(mode="json")
    report = ImportReport()
    documents: list[tuple[dict[str, Any], Any]] = []
    by_fw: dict[int, str] = {}
    for run in read_launchpad(launchpad_file):
        if isinstance(run, str):
            report.in_flight += 1
            continue
        document = record_of(run, checked, by_fw)
        validate_document({**document, "schema_version": SCHEMA_VERSION})
        by_fw[run.firework["fw_id"]] = document["record_id"]
        stored = ((run.launch.get("action") or {}).get("stored_data")) or None
        documents.append((document, stored))
    with store.transaction() as session:
        ids = [d["record_id"] for d, _ in documents]
        present = set(session.scalars(select(Record.record_id).where(Record.record_id.in_(ids))))
        for document, output in documents:
            if document["record_id"] in present:
                report.present += 1
                continue
            full = validate_document({**document, "schema_version": SCHEMA_VERSION})
            full = full.model_dump(mode="json")
            session.add(Record(document=full, output=output, created_at=utcnow()))
            session.flush()
            for parent in document["parents"]:
                session.add(ProvenanceEdge(parent_id=parent, child_id=document["record_id"],
                                           relation="input"))
            report.added += 1
            report.failed += document["run"]["status"] == "failed"
            report.records.append(document["record_id"])
    return report
