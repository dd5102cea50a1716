"""Derived records carry the method of the calculations they were derived from (issue 14).

Two elastic studies of Cu with two EAM potentials of Debian's ``lammps-data``
(``/usr/share/lammps/potentials``) must stay two results, told apart by their potential in
``matdx results``, ``matdx query`` and every export format.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import pytest

from matdx.recipes.derived import MixedMethods, derived_method
from matdx.workflows.campaign import plan_campaign, read_campaign
from tests.conftest import matdx_cli

U3 = "eam: Cu_u3.eam"
MISHIN = "eam/alloy: Cu_mishin1.eam.alloy"


def _lammps(potential: str, sha: str) -> dict:
    return {"code": "lammps", "code_version": "20220623", "calculation": "static",
            "pseudopotentials": [{"name": potential, "sha256": sha}],
            "parameters": {"pair_style": "eam", "protocol": "moderate"}}


def test_a_fit_of_two_potentials_is_refused_naming_the_difference():
    same = derived_method([_lammps("Cu_u3.eam", "a" * 64)] * 3, "eos-fit", {"fit": "bm3"})
    assert same["code"] == "lammps" and same["potential"] == "eam: Cu_u3.eam"
    assert same["protocol"] == "moderate" and same["calculation"] == "eos-fit"
    assert same["parameters"]["fit"] == "bm3"
    assert same["parameters"]["input_parameters"]["pair_style"] == "eam"
    with pytest.raises(MixedMethods, match=r"methods\[1\]\.potential"):
        derived_method([_lammps("Cu_u3.eam", "a" * 64), _lammps("Cu_smf7.eam", "b" * 64)],
                       "elastic-fit", {})
    with pytest.raises(MixedMethods, match=r"methods\[1\]\.pseudopotentials"):
        derived_method([_lammps("Cu_u3.eam", "a" * 64), _lammps("Cu_u3.eam", "c" * 64)],
                       "elastic-fit", {})
    with pytest.raises(MixedMethods, match="1 of 2 inputs name no method"):
        derived_method([_lammps("Cu_u3.eam", "a" * 64), None], "phonon", {})


@pytest.mark.programs
def test_two_lammps_potentials_stay_two_results_in_results_query_and_exports(tmp_path):
    from matdx.client import Client
    from matdx.workflows.executors.local import LocalExecutor

    home = tmp_path / "home"
    client = Client(home, executors={"local": LocalExecutor(workers=2)})
    campaign_id = client.submit(plan_campaign(read_campaign({
        "name": "cu-two-potentials", "studies": [
            {"recipe": "elastic", "code": "lammps", "structures": [{"bulk": ["Cu"]}],
             "parameters": {"pair_style": "eam", "pair_coeff": ["* * Cu_u3.eam"]}},
            {"recipe": "elastic", "code": "lammps", "structures": [{"bulk": ["Cu"]}],
             "parameters": {"pair_style": "eam/alloy",
                            "pair_coeff": ["* * Cu_mishin1.eam.alloy Cu"]}},
        ]})))
    [status] = client.run(campaign_id, poll_s=0.5, timeout_s=900)
    client.store.dispose()
    assert status.counts == {"COMPLETED": status.total}, status.failures

    shown = matdx_cli("results", campaign_id, "--home", str(home), "--format", "csv",
                      check=True).stdout
    rows = list(csv.DictReader(io.StringIO(shown)))
    assert sorted(r["method"] for r in rows) == [f"lammps | {MISHIN}", f"lammps | {U3}"]

    found = json.loads(matdx_cli("query", "--home", str(home), "--calculation", "elastic-fit",
                                 "--potential", "Cu_mishin1.eam.alloy", "--format", "json",
                                 check=True).stdout)["records"]
    assert [(r["code"], r["potential"]) for r in found] == [("lammps", MISHIN)]
    fits = json.loads(matdx_cli("query", "--home", str(home), "--calculation", "elastic-fit",
                                "--code", "lammps", "--format", "json",
                                check=True).stdout)["records"]
    assert sorted(r["potential"] for r in fits) == [MISHIN, U3]
    table = matdx_cli("query", "--home", str(home), "--calculation", "elastic-fit",
                      check=True).stdout
    assert "Cu_mishin1.eam.alloy" in table and "Cu_u3.eam" in table

    def export(fmt: str, target: str) -> None:
        matdx_cli("export", fmt, str(tmp_path / target), "--home", str(home), "--code",
                  "lammps", "--admin", check=True)

    export("optimade", "records.jsonl")
    entries = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    fitted = {e["attributes"]["_matdx_potential"] for e in entries
              if e.get("attributes", {}).get("_matdx_calculation") == "elastic-fit"}
    assert fitted == {MISHIN, U3}

    export("parquet", "records.parquet")
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "records.parquet").to_pylist()
    assert {r["potential"] for r in table if r["calculation"] == "elastic-fit"} == {MISHIN, U3}
    assert {r["method"] for r in table} == {f"lammps | {MISHIN} | moderate",
                                            f"lammps | {U3} | moderate"}

    export("ase", "records.db")
    with sqlite3.connect(tmp_path / "records.db") as db:
        values = {v for (v,) in db.execute(
            "SELECT value FROM text_key_values WHERE key = 'potential'")}
    assert values == {MISHIN, U3}

    export("extxyz", "xyz")
    from ase.io import read

    frames = [f for split in ("train", "validation", "test")
              for f in read(tmp_path / "xyz" / f"{split}.xyz", index=":")]
    assert {f.info["method"] for f in frames} == {f"lammps | {MISHIN} | moderate",
                                                  f"lammps | {U3} | moderate"}

    export("archive", "records.tar")
    import tarfile

    with tarfile.open(tmp_path / "records.tar") as archive:
        lines = archive.extractfile("matdx-archive/records.jsonl").read().splitlines()
    potentials = {json.loads(line)["record"]["method"]["potential"] for line in lines}
    assert potentials == {MISHIN, U3}


def test_a_fit_of_smeared_and_fixed_occupations_is_refused():
    smeared = {**_lammps("Cu_u3.eam", "a" * 64), "smearing": {"type": "mv", "width_Ry": 0.01}}
    fixed = _lammps("Cu_u3.eam", "a" * 64)
    assert derived_method([smeared, smeared], "phonon", {})["smearing"] == smeared["smearing"]
    with pytest.raises(MixedMethods, match=r"methods\[1\]\.smearing"):
        derived_method([smeared, fixed], "phonon", {})
