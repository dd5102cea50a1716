"""Arrays belong to the record (issue 14): headline numbers reproduced from the store alone.

Each test runs a recipe through the engine, deletes the run directories, and recomputes the
recipe's headline numbers from what the store holds: phonon frequencies at X and L from the
stored force constants (phonopy), B0 from a refit of the stored E(V) points, Cij from the
stored strains and stresses, g(r) and MSD arrays of an MD analysis.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from matdx.recipes.elastic import fit_elastic
from matdx.recipes.eos import bulk_modulus_estimate
from matdx.workflows.campaign import plan_campaign, read_campaign
from tests.conftest import matdx_cli


@pytest.fixture
def client(tmp_path):
    from matdx.client import Client
    from matdx.workflows.executors.local import LocalExecutor

    home = tmp_path / "home"
    made = Client(home, executors={"local": LocalExecutor(workers=2)})
    yield made
    made.store.dispose()


def run_and_forget_run_dirs(client, campaign: dict) -> dict:
    """Run the campaign, delete every run directory, return {recipe: StoredRecord}."""
    campaign_id = client.submit(plan_campaign(read_campaign(campaign)))
    [status] = client.run(campaign_id, poll_s=0.5, timeout_s=900)
    assert status.counts == {"COMPLETED": status.total}, status.failures
    shutil.rmtree(client.home / "runs")
    return {row["recipe"]: client.record(row["record_id"]) for row in client.results(campaign_id)}


def plotted(client, stored, tmp_path) -> None:
    """``matdx plot`` draws each record (run directories already gone)."""
    for recipe, record in stored.items():
        target = tmp_path / f"{recipe}.png"
        drawn = matdx_cli("plot", record.record_id, "--home", str(client.home), "-o",
                          str(target))
        assert drawn.returncode == 0, drawn.stderr
        assert target.stat().st_size > 10_000, recipe


def _stresses(elastic) -> list[dict]:
    from ase.stress import voigt_6_to_full_3x3_stress
    from ase.units import GPa

    return [{"component": j, "strain": e, "stress": voigt_6_to_full_3x3_stress(np.asarray(s))
             * GPa} for j, e, s in zip(elastic.components, elastic.strains,
                                      elastic.stresses_GPa, strict=True)]


@pytest.mark.parametrize(("code", "parameters"), [
    ("emt", {}),
    pytest.param("lammps", {"pair_style": "eam/alloy",
                            "pair_coeff": ["* * Cu_mishin1.eam.alloy Cu"]},
                 marks=pytest.mark.programs),
    pytest.param("chgnet", {}, marks=pytest.mark.slow),  # the mlip extra, installed in CI
])
def test_eos_elastic_and_phonon_numbers_come_back_from_the_store(client, code, parameters,
                                                                 tmp_path):
    from ase.build import bulk

    study = {"code": code, "parameters": parameters, "structures": [{"bulk": ["Cu"]}]}
    stored = run_and_forget_run_dirs(client, {"name": f"cu-{code}", "studies": [
        {"recipe": "eos", **study}, {"recipe": "elastic", **study},
        {"recipe": "phonon", **study, "settings": {"mesh": [8, 8, 8]}},
    ]})
    expected_potential = "eam/alloy: Cu_mishin1.eam.alloy" if code == "lammps" else None
    for record in stored.values():
        assert record.method.code == code
        assert record.method.potential == expected_potential

    eos = stored["eos"].eos
    refit = bulk_modulus_estimate(np.array(eos.volumes_A3), np.array(eos.energies_eV))
    assert refit["B0_GPa"] == pytest.approx(eos.B0_GPa, rel=1e-9)
    assert stored["eos"].results.properties["B0_GPa"] == pytest.approx(eos.B0_GPa, rel=1e-12)
    assert np.asarray(eos.covariance).shape == (4, 4)

    elastic = stored["elastic"].elastic
    again = fit_elastic.original(_stresses(elastic), bulk("Cu"))
    # CHGNet computes in single precision: its stored stresses carry 7 digits
    scale = 1e-9 if code != "chgnet" else 1e-7 * float(np.abs(elastic.C_GPa).max())
    np.testing.assert_allclose(again["C_GPa"], elastic.C_GPa, atol=scale)
    assert stored["elastic"].results.properties["C11_GPa"] == pytest.approx(
        elastic.C_GPa[0][0], abs=1e-9)

    phonon = stored["phonon"].phonon
    model = stored["phonon"].phonopy()  # force constants from the artifact store
    at = {"X": [0.5, 0.0, 0.5], "L": [0.5, 0.5, 0.5]}  # reduced, fcc primitive cell
    labelled = {}
    for (start, end), (first, last) in zip(phonon.band_labels, phonon.band_segments,
                                           strict=True):
        labelled.setdefault(start, phonon.band_frequencies_THz[first])
        labelled.setdefault(end, phonon.band_frequencies_THz[last])
    for label, q in at.items():
        model.run_qpoints([q])
        from_constants = model.qpoints.frequencies[0]
        np.testing.assert_allclose(sorted(labelled[label]), sorted(from_constants), atol=1e-6)
    assert len(phonon.temperatures_K) == len(phonon.heat_capacity_J_per_K_mol) == 101
    assert phonon.heat_capacity_J_per_K_mol[-1] == pytest.approx(3 * 8.314462618, rel=0.02)
    plotted(client, stored, tmp_path)


def test_md_analysis_keeps_g_of_r_msd_formula_and_thermostat(client, tmp_path):
    stored = run_and_forget_run_dirs(client, {"name": "cu-md", "studies": [
        {"recipe": "md", "code": "emt", "structures": [{"bulk": ["Cu"], "cubic": True,
                                                        "repeat": [2, 2, 2]}],
         "settings": {"steps": 200, "sample_every": 10, "temperature_K": 300}}]})
    record = stored["md"]
    md = record.md
    assert record.record.system.chemical_formula_reduced == "Cu"
    assert record.method.code == "emt" and record.method.calculation == "md-analysis"
    assert md.thermostat == "Langevin" and md.temperature_K == 300
    assert len(md.r_A) == len(md.g_r) > 10
    assert md.r_A[int(np.argmax(md.g_r))] == pytest.approx(2.5, abs=0.15)
    assert len(md.time_fs) == len(md.msd_A2) > 10 and md.msd_A2[0] == 0
    plotted(client, stored, tmp_path)


@pytest.mark.programs
def test_band_gap_comes_back_from_the_stored_eigenvalues(client, tmp_path):
    """pw.x, protocol fast: Si's gap from the stored path and mesh eigenvalues."""
    from matdx.codes.bandgap import band_gap

    stored = run_and_forget_run_dirs(client, {
        "name": "si-bands", "recipe": "bands", "code": "espresso", "protocol": "fast",
        "structures": [{"bulk": ["Si"]}]})
    record = stored["bands"]
    bands = record.bands
    assert record.method.code == "espresso" and record.method.functional
    path, mesh = np.asarray(bands.eigenvalues_eV), np.asarray(bands.mesh_eigenvalues_eV)
    n = min(path.shape[2], mesh.shape[2])
    gap = band_gap(np.concatenate([path[:, :, :n], mesh[:, :, :n]], axis=1),
                   fermi_level=bands.fermi_level_eV)
    assert gap.gap == pytest.approx(record.results.band_gap, abs=1e-9)
    assert bands.band_gap_eV == pytest.approx(record.results.band_gap, abs=1e-9)
    assert 0.3 < gap.gap < 1.0  # Si, PBE: 0.6 eV
    assert len(bands.special_points) >= 3  # the fcc path's labelled points
    plotted(client, stored, tmp_path)


@pytest.mark.slow
@pytest.mark.programs
def test_cp2k_eos_and_static_numbers_come_back_from_the_store(client, tmp_path):
    """CP2K on Si (small cutoffs and a 2³ k-point grid: cheap, not converged): B0 from a refit
    of the stored E(V) points, the static energy from the stored CP2K output."""
    from ase.units import Hartree

    parameters = {"cutoff": 150, "rel_cutoff": 30, "kpoints": {"grid": [2, 2, 2]},
                  "scf_method": "diagonalization"}
    study = {"code": "cp2k", "protocol": "fast", "parameters": parameters,
             "structures": [{"bulk": ["Si"]}]}
    stored = run_and_forget_run_dirs(client, {"name": "si-cp2k", "studies": [
        {"recipe": "eos", **study, "settings": {"points": 7, "relax_first": False}},
        {"recipe": "static", **study}]})
    for record in stored.values():
        assert record.method.code == "cp2k" and record.method.code_version

    eos = stored["eos"].eos
    refit = bulk_modulus_estimate(np.array(eos.volumes_A3), np.array(eos.energies_eV))
    assert refit["B0_GPa"] == pytest.approx(eos.B0_GPa, rel=1e-9)
    assert stored["eos"].results.properties["B0_GPa"] == pytest.approx(eos.B0_GPa, rel=1e-12)

    static = stored["static"]
    [output] = [a.name for a in static.record.artifacts if a.name.endswith(".out")]
    text = static.artifact(output, tmp_path / Path(output).name).read_text()
    [*_, line] = [row for row in text.splitlines()
                  if row.strip().startswith("ENERGY| Total FORCE_EVAL")]
    assert float(line.split()[-1]) * Hartree == pytest.approx(static.results.energy, abs=1e-6)
