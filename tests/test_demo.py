"""`matdx demo` end to end on a fresh home: table, records with provenance, plots."""

from __future__ import annotations

import json
import sqlite3

import pytest
from ase.eos import EquationOfState
from ase.units import GPa

from tests.conftest import matdx_cli


@pytest.mark.slow
def test_demo_prints_the_table_and_stores_verified_records(home):
    demo = matdx_cli("demo", timeout=600)
    assert demo.returncode == 0, demo.stderr
    assert "Equations of state" in demo.stdout and "Diffusion in Cu" in demo.stdout
    for name in ("eos.png", "rdf.png", "msd.png"):
        assert (home / "plots" / name).stat().st_size > 10_000

    db = sqlite3.connect(home / "store.sqlite")
    # Cu: B0 from the stored fit against ASE's fit of the very same E(V) points
    [(document,)] = db.execute(
        "SELECT r.document FROM records r JOIN jobs j ON j.record_id = r.record_id "
        "JOIN workflows w ON w.id = j.workflow_id WHERE w.name = 'eos Cu' AND j.name = 'fit' "
        "AND j.output_ref IS NULL"
    ).fetchall()
    [(output,)] = db.execute(
        "SELECT r.output FROM records r WHERE r.record_id = ?", (json.loads(document)["record_id"],)
    ).fetchall()
    fit = json.loads(output)
    volumes, energies = fit["volumes"]["@ndarray"]["data"], fit["energies"]["@ndarray"]["data"]
    _, _, b0 = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    assert fit["B0_GPa"] == pytest.approx(b0 / GPa, rel=0.02)
    cu_line = next(line for line in demo.stdout.splitlines() if line.startswith("│ Cu "))
    assert f"{fit['B0_GPa']:.4f}"[:5] in cu_line

    # one record per attempt that ran; every job completed; provenance filled in
    assert db.execute("SELECT COUNT(*) FROM jobs WHERE state != 'COMPLETED'").fetchone()[0] == 0
    per_attempt = db.execute(
        "SELECT COUNT(r.record_id) FROM attempts a LEFT JOIN records r "
        "ON r.job_id = a.job_id AND r.attempt = a.number GROUP BY a.job_id, a.number"
    ).fetchall()
    assert {n for (n,) in per_attempt} == {1}
    documents = [json.loads(d) for (d,) in db.execute("SELECT document FROM records")]
    assert len(documents) == len(per_attempt) >= 69
    for record in documents:
        assert len(record["input_hash"]) == 64
        assert record["run"]["matdx_version"] and record["run"]["host"]
        assert record["run"]["versions"]["ase"]
    points = [r for r in documents if r["job_name"] == "eos_point"]
    assert all(len(r["parents"]) == 1 for r in points)  # the relaxation they scaled
    md = [r for r in documents if r["job_name"] == "md"]
    assert len(md) == 3 and all(
        a["media_type"] == "application/x-h5md" for r in md for a in r["artifacts"]
    )
    assert all(r["system"]["nsites"] == 256 for r in md)

    verify = matdx_cli("store", "verify")
    assert verify.returncode == 0
    assert "0 missing, 0 corrupt" in verify.stdout
