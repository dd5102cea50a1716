"""VASP: inputs from pymatgen's MP sets, and parsing and error handling on recorded outputs.

VASP is licensed and cannot run here, so these tests use outputs recorded from real VASP runs
(custodian's MIT-licensed test data, copied into ``fixtures/vasp``; see its README). No
POTCAR is written or needed anywhere: inputs carry ``POTCAR.spec``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read
from ase.units import GPa
from pymatgen.io.vasp.inputs import Incar, Kpoints

from matdx.codes.base import diagnose, explain_failure, read_parameters_record
from matdx.codes.errors import InputError, ReadError
from matdx.codes.kpoints import kpoint_grid
from matdx.codes.vasp import VaspTemplate
from tests.codes.helpers import FIXTURES, handlers_firing

CASES = FIXTURES / "vasp"


@pytest.fixture(scope="module")
def template() -> VaspTemplate:
    return VaspTemplate()


def poscar(case: str):
    return read(CASES / case / "POSCAR", format="vasp")


# --------------------------------------------------------------------------- inputs


def test_relax_input_from_mp_set_with_potcar_spec(template, tmp_path):
    atoms = bulk("Fe", "bcc", a=2.87, cubic=True)
    atoms[1].symbol = "Co"
    atoms.set_initial_magnetic_moments([2.5, 1.5])
    parameters = {"incar": {"ALGO": "Normal", "LREAL": None}, "kpoints": {"density": 4.0}}
    before = atoms.copy()
    template.write_input(tmp_path, atoms, parameters, "relax")
    assert atoms == before and parameters == {
        "incar": {"ALGO": "Normal", "LREAL": None}, "kpoints": {"density": 4.0}
    }
    assert not list(tmp_path.glob("POTCAR")) and (tmp_path / "POTCAR.spec").is_file()
    assert (tmp_path / "POTCAR.spec").read_text().split() == ["Fe_pv", "Co"]
    incar = Incar.from_file(tmp_path / "INCAR")
    assert incar["ISIF"] == 2 and incar["ALGO"] == "Normal" and "LREAL" not in incar
    assert incar["MAGMOM"] == [2.5, 1.5] and incar["ENCUT"] == 520
    kpoints = Kpoints.from_file(tmp_path / "KPOINTS")
    assert tuple(kpoints.kpts[0]) == kpoint_grid(atoms.cell, 4.0)
    assert read(tmp_path / "POSCAR").get_chemical_symbols() == ["Fe", "Co"]  # order kept
    record = read_parameters_record(tmp_path)
    assert record["parameters"]["input_set"] == "MPRelaxSet"
    assert record["parameters"]["potcar_symbols"] == ["Fe_pv", "Co"]


def test_static_and_vc_relax_use_their_sets(template, tmp_path):
    template.write_input(tmp_path / "static", bulk("Si"), {}, "static")
    template.write_input(tmp_path / "vc", bulk("Si"), {}, "vc-relax")
    assert Incar.from_file(tmp_path / "static" / "INCAR")["NSW"] == 0
    assert Incar.from_file(tmp_path / "vc" / "INCAR")["ISIF"] == 3


def test_nscf_needs_the_parent_charge_density(template, tmp_path):
    with pytest.raises(InputError, match="CHGCAR"):
        template.write_input(tmp_path, bulk("Si"), {}, "nscf")
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "CHGCAR").write_text("charge density of the parent run\n")
    template.write_input(tmp_path / "bands", bulk("Si"), {"parent_directory": str(parent),
                                                          "kpoints": {"line_density": 10}},
                         "bands")
    assert Incar.from_file(tmp_path / "bands" / "INCAR")["ICHARG"] == 11
    assert (tmp_path / "bands" / "CHGCAR").read_text() == "charge density of the parent run\n"
    assert "line" in (tmp_path / "bands" / "KPOINTS").read_text().lower()


def test_unknown_keys_are_rejected(template, tmp_path):
    with pytest.raises(InputError, match="unknown keys"):
        template.write_input(tmp_path, bulk("Si"), {"INCAR": {}}, "static")


# --------------------------------------------------------------------------- parsing


def test_postprocess_parses_a_finished_relaxation(template):
    """Recorded output (VASP cannot run here): a finished FeO relaxation."""
    result = template.read_results(CASES / "postprocess")
    assert result.converged and result.scf_converged and result.ionic_converged
    assert result.calculation == "vc-relax"  # ISIF = 3 in the recorded INCAR
    assert result.code_version == "5.3.5"
    assert result.energy == pytest.approx(-28.21851457)  # TOTEN (free energy) of the last step
    assert result.forces.shape == (4, 3) and np.abs(result.forces).max() < 0.02
    # vasprun.xml: stress in kBar, positive under compression; ASE: the opposite sign
    assert result.stress[0, 0] == pytest.approx(1.98922371 * 0.1 * GPa)
    assert np.allclose(result.stress, result.stress.T, atol=1e-8)
    contcar = read(CASES / "postprocess" / "CONTCAR", format="vasp")
    assert np.allclose(result.structure.cell.array, contcar.cell.array, atol=1e-5)
    assert result.structure.get_chemical_formula() == "Fe2O2"
    assert result.magnetic_moments.tolist() == [3.007, 1.397, -0.189, -0.189]
    assert result.n_ionic_steps == 28 and result.frames.positions.shape == (28, 4, 3)
    assert result.eigenvalues.shape == (2, 1, 24) and result.kweights.tolist() == [1.0]
    assert result.band_gap == pytest.approx(1.7962, abs=1e-3)
    assert result.fermi_level == pytest.approx(2.41549698)
    assert result.walltime_s == pytest.approx(82.845)
    assert result.pseudopotentials == [
        {"element": "Fe", "name": "PAW_PBE Fe 06Sep2000", "sha256": None},
        {"element": "O", "name": "PAW_PBE O 08Apr2002", "sha256": None},
    ]
    assert result.parameters["incar"]["LDAUU"] == [4.0, 0]


def test_missing_and_truncated_vasprun_raise_read_error(template):
    with pytest.raises(ReadError, match="missing"):
        template.read_results(CASES / "nonconv")
    with pytest.raises(ReadError, match="truncated"):
        template.read_results(CASES / "large_cell_real_optlay")


# --------------------------------------------------------------------------- handlers

EXPECTED = {
    # a finished run whose smearing custodian finds too large (entropy term > 1 meV/atom):
    # corrected and rerun, not accepted
    "postprocess": {"custodian.LargeSigmaHandler"},
    "max_force": {"max_force"},
    # ten-step SCF per ionic step in OSZICAR alone: custodian's NonConvergingErrorHandler wants
    # ten such ionic steps in a row, UnconvergedErrorHandler a vasprun.xml
    "nonconv": set(),
    "positive_energy": {"custodian.PositiveEnergyErrorHandler"},
    "too_few_bands": {"custodian.VaspErrorHandler"},
    # VASP's routine "aliasing errors must be expected" notice is not an error
    "aliasing": set(),
    "aliasing_incar": set(),
    "large_cell_real_optlay": {"custodian.VaspErrorHandler"},
    "oom": {"out_of_memory", "custodian.StdErrHandler"},
}


def test_every_recorded_case_is_covered():
    assert {p.name for p in CASES.iterdir() if p.is_dir()} == set(EXPECTED)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_each_handler_detects_only_its_case(template, case):
    """Recorded outputs: each case fires exactly its handler; the finished run fires none."""
    assert handlers_firing(template, CASES / case) == EXPECTED[case]


def test_max_force_continues_from_contcar_with_a_force_criterion(template):
    correction = diagnose(template, CASES / "max_force", {}, poscar("max_force"))
    assert correction.handler == "max_force"
    assert correction.parameter_updates == {"incar": {"EDIFFG": -0.05}}
    contcar = read(CASES / "max_force" / "CONTCAR", format="vasp")
    assert np.allclose(correction.restart_structure.positions, contcar.positions, atol=1e-4)


def test_positive_energy_switches_algo(template):
    correction = diagnose(template, CASES / "positive_energy", {}, poscar("positive_energy"))
    assert correction.handler == "custodian.PositiveEnergyErrorHandler"
    assert correction.errors == ("Positive energy",)
    assert correction.actions == ({"dict": "INCAR", "action": {"_set": {"ALGO": "Normal"}}},)
    assert correction.parameter_updates == {"incar": {"ALGO": "Normal"}}


def test_lreal_problem_in_a_large_cell_is_an_input_error(template):
    atoms = poscar("large_cell_real_optlay")
    err = explain_failure(template, CASES / "large_cell_real_optlay", {}, atoms)
    assert err.kind == "input" and err.correction.errors == ("real_optlay",)
    assert err.correction.parameter_updates == {"incar": {"LREAL": False}}


def test_a_large_smearing_of_a_finished_run_is_corrected(template):
    correction = diagnose(template, CASES / "postprocess", {}, poscar("postprocess"))
    assert correction.handler == "custodian.LargeSigmaHandler"
    assert set(correction.parameter_updates["incar"]) == {"SIGMA"}


def test_out_of_memory_is_infrastructure_with_fewer_ranks(template):
    err = explain_failure(template, CASES / "oom", {}, bulk("Si"))
    assert err.kind == "resources"
    assert err.handlers == ("out_of_memory", "custodian.StdErrHandler")
    assert err.correction.resources == {"ranks_factor": 0.5}
    assert err.correction.parameter_updates == {}


def test_fixtures_hold_no_potcar():
    assert not [p for p in Path(CASES).rglob("*") if p.name.startswith("POTCAR")]


def test_relaxation_out_of_ionic_steps_continues_from_contcar(template, tmp_path):
    """The recorded relaxation with NSW lowered to the 28 steps it took: VASP would have
    stopped there unconverged (the only edit of the recorded vasprun.xml)."""
    case = tmp_path / "nsw"
    case.mkdir()
    for name in ("INCAR", "CONTCAR", "POSCAR", "KPOINTS"):
        (case / name).write_text((CASES / "postprocess" / name).read_text())
    text = (CASES / "postprocess" / "vasprun.xml").read_text()
    edited, count = re.subn(r'(name="NSW">\s*)99<', r"\g<1>28<", text)
    assert count == 2  # the INCAR echo and the parameters section
    (case / "vasprun.xml").write_text(edited)
    assert handlers_firing(template, case) == {"custodian.UnconvergedErrorHandler"}
    correction = diagnose(template, case, {}, poscar("postprocess"))
    contcar = read(case / "CONTCAR", format="vasp")
    assert correction.handler == "custodian.UnconvergedErrorHandler"
    assert {"file": "CONTCAR", "action": {"_file_copy": {"dest": "POSCAR"}}} in correction.actions
    assert np.allclose(correction.restart_structure.positions, contcar.positions)


def test_killed_relaxation_continues_from_contcar(template, tmp_path):
    case = tmp_path / "killed"
    shutil.copytree(CASES / "nonconv", case)
    (case / "OSZICAR").unlink()  # the kill, not the SCF, is the problem here
    record = {"argv": ["vasp_std"], "ranks": 4, "threads": 1, "timeout_s": None,
              "host": "node1", "started": "2025-01-01T00:00:00+00:00"}
    (case / "execution.json").write_text(json.dumps(record))  # never completed: node died
    assert handlers_firing(template, case) == {"walltime"}
    err = explain_failure(template, case, {}, poscar("nonconv"))
    assert err.kind == "infrastructure"
    contcar = read(case / "CONTCAR", format="vasp")
    assert np.allclose(err.correction.restart_structure.positions, contcar.positions)
