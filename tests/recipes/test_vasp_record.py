"""A finished VASP run becomes a record whose numbers match pymatgen's reading of it.

VASP cannot run here: these are recorded outputs of a real VASP relaxation (see
tests/codes/fixtures/README.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from ase.units import GPa
from pymatgen.io.vasp.outputs import Vasprun

from matdx.codes.vasp import VaspTemplate
from matdx.recipes.calculation import output_of
from matdx.workflows.records import build_record
from matdx.workflows.serialization import encode

RUN = Path(__file__).resolve().parents[1] / "codes" / "fixtures" / "vasp" / "postprocess"


def test_vasprun_becomes_a_record_matching_pymatgen(tmp_path, monkeypatch):
    directory = tmp_path / "calc"
    shutil.copytree(RUN, directory)
    monkeypatch.chdir(tmp_path)
    output = output_of(VaspTemplate().read_results(directory), Path("calc"), "moderate", [])
    job = SimpleNamespace(campaign_id="c", workflow_id="w", id="j", name="relax",
                          function="matdx.recipes.relax:relax", corrections=[])
    campaign = SimpleNamespace(tags=[], owner="", project="", access="private", license="")
    result = {"status": "completed", "attempt": 1, "input_hash": "0" * 64,
              "output": encode(output), "versions": {"matdx": "test"}}
    record = build_record(record_id="r", job=job, campaign=campaign, result=result, inputs={},
                          artifacts=[], parents=[], retry_of=None, corrections=[],
                          batch_id=None, scheduler_job_id=None, run_dir=str(directory))

    reference = Vasprun(str(RUN / "vasprun.xml"), parse_potcar_file=False)
    last = reference.ionic_steps[-1]
    assert abs(record.results.energy - last["e_fr_energy"]) < 1e-6
    np.testing.assert_allclose(record.results.forces, last["forces"], atol=1e-6)
    # VASP prints stress in kBar, positive under compression; records use eV/Å³, ASE's sign.
    expected_stress = -np.asarray(last["stress"]) * 0.1 * GPa
    np.testing.assert_allclose(record.results.stress, expected_stress, atol=1e-6)
    assert record.method.code == "vasp"
    final = reference.final_structure
    assert record.system.elements == sorted(el.symbol for el in final.composition.elements)
    assert record.system.nsites == len(final)
    np.testing.assert_allclose(record.system.lattice_vectors, final.lattice.matrix, atol=1e-6)


def test_scaled_cells_share_the_reference_kpoint_grid():
    """EOS points and strained cells are computed on the grid of the unstrained cell."""
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.vasp.inputs import Kpoints

    from matdx.codes.kpoints import kpoint_grid
    from matdx.recipes.calculation import fixed_kpoints

    silicon = bulk("Si", "diamond", a=5.43)
    expected = list(
        Kpoints.automatic_density_by_vol(AseAtomsAdaptor.get_structure(silicon), 100).kpts[0]
    )
    assert fixed_kpoints("vasp", "moderate", None, silicon)["kpoints"] == {"grid": expected}
    squeezed = silicon.copy()
    squeezed.set_cell(silicon.cell * 0.94, scale_atoms=True)
    # on its own, the squeezed cell would get a denser grid from the same reciprocal density
    assert fixed_kpoints("vasp", "moderate", None, squeezed)["kpoints"]["grid"] != expected
    espresso = fixed_kpoints("espresso", "moderate", {"kpoints": {"density": 4.0}}, silicon)
    assert espresso["kpoints"] == {
        "grid": [int(n) for n in kpoint_grid(silicon.cell, 4.0, silicon.pbc)], "shift": [0, 0, 0]
    }
    explicit = {"kpoints": {"grid": [3, 3, 3]}}
    assert fixed_kpoints("cp2k", "moderate", explicit, silicon) == explicit
    assert "kpoints" not in fixed_kpoints("cp2k", "moderate", None, silicon)  # Γ only
