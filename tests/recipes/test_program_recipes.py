"""Recipes with real programs (Quantum ESPRESSO, LAMMPS) driven by the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from matdx.store.models import Job, Record
from matdx.workflows.campaign import plan_campaign, read_campaign
from matdx.workflows.serialization import decode

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.programs


@pytest.fixture
def client(tmp_path):
    """A SQLite store: these tests exercise the programs and recipes, which do not depend on
    the store backend, so they run once rather than once per backend."""
    from matdx.client import Client
    from matdx.workflows.executors.local import LocalExecutor

    home = tmp_path / "home"
    made = Client(home, url=f"sqlite:///{home / 'store.sqlite'}",
                  executors={"local": LocalExecutor(workers=2)})
    yield made
    made.store.dispose()


def run(client, campaign: dict, timeout: float = 900) -> str:
    campaign_id = client.submit(plan_campaign(read_campaign(campaign)))
    [status] = client.run(campaign_id, poll_s=0.5, timeout_s=timeout)
    assert status.counts.get("FAILED", 0) == 0, status.failures
    return campaign_id


def records(client, campaign_id: str, job_name: str) -> list[dict]:
    with client.store.transaction() as session:
        return [doc for (doc,) in session.execute(
            select(Record.document).join(Job, Job.id == Record.job_id)
            .where(Job.campaign_id == campaign_id, Job.name == job_name)
            .order_by(Record.created_at))]


def leaf(client, campaign_id: str, workflow: str) -> dict:
    [row] = [r for r in client.results(campaign_id) if r["workflow"] == workflow]
    return decode(row["output"])


def test_scf_failure_is_corrected_by_the_handler_and_recorded(client):
    """Injected failure: too few SCF iterations; the handler's correction converges."""
    campaign_id = run(client, {
        "name": "scf-fix", "recipe": "static", "code": "espresso", "protocol": "fast",
        "structures": [{"bulk": ["Si"]}],
        "parameters": {"electrons": {"electron_maxstep": 2}},
    })
    first, second = records(client, campaign_id, "static")
    assert first["run"]["status"] == "failed"
    assert "convergence NOT achieved" in first["run"]["error"]["message"] or \
        "SCF" in first["run"]["error"]["last_line"]
    assert second["run"]["status"] == "completed"
    [correction] = second["run"]["corrections"]
    assert correction["handler"] == "scf_unconverged"
    electrons = second["method"]["parameters"]["electrons"]
    assert electrons["electron_maxstep"] >= 100
    assert electrons["mixing_beta"] < 0.4
    assert second["retry_of"] == first["record_id"]
    assert second["results"]["energy"] < 0


@pytest.mark.slow
def test_si_al_relax_static_bands_eos_with_pw(client):
    """The example campaign: Si is a semiconductor with B0 near 98 GPa, Al a metal."""
    campaign_id = client.submit(EXAMPLES / "si-al-espresso.yaml")
    [status] = client.run(campaign_id, poll_s=1.0, timeout_s=1800)
    assert status.counts == {"COMPLETED": status.total}
    gaps = {doc["system"]["chemical_formula_reduced"]: doc["results"]["band_gap"]
            for doc in records(client, campaign_id, "band_structure")}
    assert gaps["Si"] > 0.3
    assert gaps["Al"] == 0.0
    si = leaf(client, campaign_id, "relax+static+bands+eos Si2")
    assert si["B0_GPa"] == pytest.approx(98.0, rel=0.15)
    assert si["minimum_bracketed"]


def test_elastic_constants_of_copper_with_emt_and_lammps(client):
    campaign_id = run(client, {"name": "cu-elastic", "studies": [
        {"recipe": "elastic", "code": "emt", "structures": [{"bulk": ["Cu"]}]},
        {"recipe": "elastic", "code": "lammps", "structures": [{"bulk": ["Cu"]}],
         "parameters": {"pair_style": "eam", "pair_coeff": ["* * Cu_u3.eam"]}},
    ]})
    for result in client.results(campaign_id):
        c = decode(result["output"])
        assert c["C11_GPa"] > c["C12_GPa"] > 0, result["workflow"]
        assert c["C44_GPa"] > 0
        assert c["mechanically_stable"]
        assert 100 < c["bulk_modulus_GPa"] < 180  # Cu: 137 GPa measured
        np.testing.assert_allclose(c["C_GPa"], np.asarray(c["C_GPa"]).T, atol=1e-9)


def test_lammps_md_of_4000_copper_atoms_is_analysed(client):
    """The example campaign: 4000 Cu atoms (EAM), 1000 steps of NVT, then g(r) and MSD."""
    campaign_id = client.submit(EXAMPLES / "cu-lammps-md.yaml")
    [status] = client.run(campaign_id, poll_s=0.5, timeout_s=900)
    assert status.counts == {"COMPLETED": 2}
    [result] = client.results(campaign_id)
    analysis = decode(result["output"])
    assert analysis["first_peak_A"] == pytest.approx(2.5, abs=0.1)
    assert analysis["coordination_first_shell"] == pytest.approx(12, abs=0.5)
    assert analysis["frames_analysed"] >= 40
    [run_record] = records(client, campaign_id, "md")
    assert run_record["system"]["nsites"] == 4000
    assert run_record["method"]["code"] == "lammps"
    assert 250 < run_record["results"]["properties"]["temperature_mean_K"] < 350
    assert {a["media_type"] for a in run_record["artifacts"]} >= {"application/x-h5md"}
