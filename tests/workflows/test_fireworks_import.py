"""``matdx import fireworks`` and ``matdx fireworks export`` on a LaunchPad in mongomock mode.

The LaunchPad is populated by a real FireWorks workflow, written with FireWorks' own API and
run by ``rlaunch``: two Fireworks that complete (a parent and its child), one that FIZZLES
(``math.sqrt(-1)``) and its child, which never runs. The atomate-style task document of the
parent is built, as atomate's VASP drone builds it, from a real VASP run: the ``vasprun.xml``
of custodian's test files (``tests/codes/fixtures/vasp/postprocess``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from matdx.store.models import ProvenanceEdge, Record
from matdx.store.store import Store
from tests.conftest import matdx_cli
from tests.workflows.fireworks_launchpad import FileLaunchPad, make_launchpad

VASPRUN = Path(__file__).parents[1] / "codes" / "fixtures" / "vasp" / "postprocess" / "vasprun.xml"

WORKFLOW = """
from fireworks import Firework, PyTask, Workflow
static = Firework(PyTask(func="math.sqrt", args=[16.0], stored_data_varname="value"),
                  name="FeO static", fw_id=-1)
child = Firework(PyTask(func="math.fabs", args=[-2.5], stored_data_varname="value"),
                 name="FeO analysis", fw_id=-2)
broken = Firework(PyTask(func="math.sqrt", args=[-1.0]), name="FeO broken", fw_id=-3)
never = Firework(PyTask(func="math.fabs", args=[1.0]), name="FeO never", fw_id=-4)
lp.add_wf(Workflow([static, child, broken, never], {static: [child], broken: [never]},
                   name="old atomate workflow"))
"""

# What atomate's VaspToDb writes for a launch: its drone parses the run's vasprun.xml.
TASK_DOCUMENT = """
import datetime
from pymatgen.io.vasp import Vasprun
run = Vasprun({vasprun!r}, parse_potcar_file=False)
launch = lp.launches.find_one({{"fw_id": {fw_id}}})
step = run.ionic_steps[-1]
lp.db.tasks.insert_one({{
    "task_id": "mp-19770-static",
    "dir_name": launch["host"] + ":" + launch["launch_dir"],
    "task_label": "static",
    "state": "successful",
    "formula_pretty": run.final_structure.composition.reduced_formula,
    "last_updated": datetime.datetime(2019, 5, 1),
    "input": {{"incar": dict(run.incar), "kpoints": run.kpoints.as_dict(),
               "potcar_spec": [{{"titel": t, "hash": None}} for t in run.potcar_symbols],
               "parameters": {{"GGA": run.parameters.get("GGA")}}}},
    "output": {{"structure": run.final_structure.as_dict(),
                "energy": float(run.final_energy),
                "energy_per_atom": float(run.final_energy) / len(run.final_structure),
                "forces": [list(map(float, f)) for f in step["forces"]],
                "stress": [list(map(float, s)) for s in step["stress"]],
                "bandgap": float(run.eigenvalue_band_properties[0])}},
    "calcs_reversed": [{{"vasp_version": run.vasp_version,
                         "output": {{"efermi": float(run.efermi)}}}}],
}})
"""


@pytest.fixture
def populated(tmp_path: Path) -> FileLaunchPad:
    launchpad = make_launchpad(tmp_path / "launchpad")
    launchpad.python(WORKFLOW)
    workdir = tmp_path / "launches"
    workdir.mkdir()
    launchpad.rlaunch(workdir)
    states = {fw["name"]: fw["state"] for fw in launchpad.collection("fireworks")}
    assert states == {"FeO static": "COMPLETED", "FeO analysis": "COMPLETED",
                      "FeO broken": "FIZZLED", "FeO never": "WAITING"}
    [static] = [fw for fw in launchpad.collection("fireworks") if fw["name"] == "FeO static"]
    launchpad.python(TASK_DOCUMENT.format(vasprun=str(VASPRUN), fw_id=static["fw_id"]))
    return launchpad


def test_a_launchpad_imports_into_records_and_failures_once(home, populated):
    from pymatgen.io.vasp import Vasprun

    arguments = ["import", "fireworks", "--launchpad", str(populated.file), "--owner", "alice",
                 "--project", "old-group", "--access", "group", "--license", "CC-BY-4.0"]
    first = matdx_cli(*arguments, env=populated.env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "3 record(s) added (1 of failed launches), 0 already present" in first.stdout
    assert "1 Firework(s) not ended" in first.stdout
    again = matdx_cli(*arguments, env=populated.env)
    assert again.returncode == 0, again.stderr
    assert "0 record(s) added (0 of failed launches), 3 already present" in again.stdout

    fw_ids = {fw["name"]: fw["fw_id"] for fw in populated.collection("fireworks")}
    store = Store(home)
    try:
        with store.transaction() as session:
            records = {r.document["job_name"]: r for r in session.scalars(select(Record))}
            edges = session.execute(select(ProvenanceEdge.parent_id, ProvenanceEdge.child_id,
                                           ProvenanceEdge.relation)).all()
    finally:
        store.dispose()
    assert set(records) == {"FeO static", "FeO analysis", "FeO broken"}
    for name, record in records.items():
        document = record.document
        assert f"fw_id {fw_ids[name]} launch_id" in document["run"]["scheduler_job_id"]
        assert f"fw_id:{fw_ids[name]}" in document["tags"]
        assert document["governance"] == {
            "owner": "alice", "project": "old-group", "access": "group",
            "embargo_until": None, "license": "CC-BY-4.0", "export_control": False,
        }
        assert document["function"].startswith("fireworks:") and "PyTask" in document["function"]

    broken = records["FeO broken"].document
    assert broken["run"]["status"] == "failed"
    assert "math domain error" in broken["run"]["error"]["last_line"]
    analysis = records["FeO analysis"]
    assert analysis.output["value"] == 2.5
    assert analysis.document["parents"] == [records["FeO static"].record_id]
    assert edges == [(records["FeO static"].record_id, analysis.record_id, "input")]

    # the task document's VASP results, in the record schema's units and sign convention
    run = Vasprun(str(VASPRUN), parse_potcar_file=False)
    static = records["FeO static"].document
    assert static["method"]["code"] == "vasp"
    assert static["method"]["code_version"] == run.vasp_version
    assert static["method"]["parameters"]["ENCUT"] == run.incar["ENCUT"]
    assert static["results"]["energy"] == pytest.approx(run.final_energy, abs=1e-10)
    assert static["results"]["fermi_level"] == pytest.approx(run.efermi)
    assert static["system"]["elements"] == sorted(run.final_structure.symbol_set)
    assert static["system"]["nsites"] == len(run.final_structure)
    kbar = run.ionic_steps[-1]["stress"][0][0]
    assert static["results"]["stress"][0][0] == pytest.approx(-kbar / 1602.1766208, rel=1e-6)
    assert static["results"]["properties"]["atomate_task_id"] == "mp-19770-static"


def test_bad_governance_is_refused_before_anything_is_written(home, populated):
    done = matdx_cli("import", "fireworks", "--launchpad", str(populated.file),
                     "--license", "not a licence", env=populated.env)
    assert done.returncode == 2
    assert "license" in done.stderr
    store = Store(home)
    try:
        with store.transaction() as session:
            assert session.scalars(select(Record)).all() == []
    finally:
        store.dispose()


def test_export_hands_a_local_campaign_to_fireworks(tmp_path, home):
    from tests.workflows.fireworks_launchpad import campaign_file

    launchpad = make_launchpad(tmp_path / "launchpad")
    body = """\
name: handed-over
studies:
  - recipe: static
    code: emt
    structures:
      - bulk: [Cu, Al]
"""
    path = campaign_file(tmp_path / "c.yaml", body, launchpad)
    path.write_text(path.read_text().replace(
        path.read_text().splitlines()[0], "executor: {type: local}"))
    assert matdx_cli("submit", str(path)).returncode == 0
    exported = matdx_cli("fireworks", "export", "handed-over", "--launchpad",
                         str(launchpad.file), env=launchpad.env)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert "launched 2" in exported.stdout
    fireworks = launchpad.collection("fireworks")
    assert len(fireworks) == 2 and {f["state"] for f in fireworks} == {"READY"}
    launchpad.rlaunch(tmp_path)
    ticked = matdx_cli("tick", env=launchpad.env)
    assert "harvested 2" in ticked.stdout, ticked.stdout + ticked.stderr

    missing = matdx_cli("fireworks", "export", "handed-over", "--launchpad",
                        str(tmp_path / "nope.yaml"), env=launchpad.env)
    assert missing.returncode == 2 and "launchpad" in missing.stderr
