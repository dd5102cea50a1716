"""`matdx demo` end to end on a fresh home: table, records with provenance, plots."""

from __future__ import annotations

import pytest
from ase.eos import EquationOfState
from ase.units import GPa
from sqlalchemy import and_, func, select

from matdx.store.models import Attempt, Job, Record, Workflow
from matdx.store.store import Store
from tests.conftest import matdx_cli


@pytest.mark.slow
def test_demo_prints_the_table_and_stores_verified_records(home):
    demo = matdx_cli("demo", timeout=600)
    assert demo.returncode == 0, demo.stderr
    assert "Equations of state" in demo.stdout and "Diffusion in Cu" in demo.stdout
    for name in ("eos.png", "rdf.png", "msd.png"):
        assert (home / "plots" / name).stat().st_size > 10_000

    store = Store(home)
    with store.transaction() as session:
        # Cu: B0 from the stored fit against ASE's fit of the very same E(V) points
        [fit] = session.scalars(
            select(Record.output)
            .join(Job, Job.record_id == Record.record_id)
            .join(Workflow, Workflow.id == Job.workflow_id)
            .where(Workflow.name == "eos Cu", Job.name == "fit", Job.output_ref.is_(None))
        ).all()
        not_completed = session.scalar(select(func.count()).where(Job.state != "COMPLETED"))
        per_attempt = session.scalars(
            select(func.count(Record.record_id))
            .select_from(Attempt)
            .outerjoin(
                Record, and_(Record.job_id == Attempt.job_id, Record.attempt == Attempt.number)
            )
            .group_by(Attempt.job_id, Attempt.number)
        ).all()
        documents = session.scalars(select(Record.document)).all()
    store.dispose()
    volumes, energies = fit["volumes"]["@ndarray"]["data"], fit["energies"]["@ndarray"]["data"]
    _, _, b0 = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    assert fit["B0_GPa"] == pytest.approx(b0 / GPa, rel=0.02)
    cu_line = next(line for line in demo.stdout.splitlines() if line.startswith("│ Cu "))
    assert f"{fit['B0_GPa']:.4f}"[:5] in cu_line

    # one record per attempt that ran; every job completed; provenance filled in
    assert not_completed == 0
    assert set(per_attempt) == {1}
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
