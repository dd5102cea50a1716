"""LAMMPS recovery on real ``lmp`` runs (Debian's LAMMPS, one rank).

Lost atoms from a too-large timestep are in ``test_lammps.py``; here: a neighbour-list overflow
corrected so the second attempt succeeds, and detection of out-of-range atoms and non-finite
thermodynamics on logs that ``lmp`` wrote for small hand-written inputs. Missing bond atoms need
two ranks and a bond stretched across their domains; the message is checked as LAMMPS prints
it (``src/ntopo_bond_all.cpp``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from ase.build import bulk

from matdx.codes.base import diagnose, run_calculation
from matdx.codes.errors import CalculationFailed, NoCorrection
from matdx.codes.lammps import LammpsTemplate
from matdx.codes.lammps_handlers import LammpsBondAtomsMissing, LammpsNonFiniteThermo
from tests.codes.helpers import handlers_firing, profile_for, require

pytestmark = pytest.mark.programs

CU = {"pair_style": "eam", "pair_coeff": ["* * Cu_u3.eam"]}


@pytest.fixture(scope="module")
def template() -> LammpsTemplate:
    require("lmp")
    return LammpsTemplate()


def run_lmp(directory: Path, script: str) -> Path:
    """Run ``lmp`` on ``script`` in ``directory`` (its own input, not matdx's) and return it."""
    directory.mkdir()
    (directory / "in.lammps").write_text(script)
    subprocess.run(["lmp", "-in", "in.lammps", "-log", "log.lammps", "-screen", "none"],
                   cwd=directory, timeout=120, check=False, capture_output=True)
    return directory


@pytest.mark.slow
def test_neighbour_list_overflow_is_rerun_with_a_smaller_skin(template, tmp_path):
    profile = profile_for(template)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    parameters = {**CU, "neighbor_skin": 24.0, "steps": 20, "temperature": 300}
    with pytest.raises(CalculationFailed) as info:
        run_calculation(template, profile, tmp_path / "1", atoms, parameters, "md")
    failure = info.value
    assert "Neighbor list overflow" in (tmp_path / "1" / "log.lammps").read_text()
    assert failure.handlers == ("neighbor_overflow",) and failure.kind == "input"
    assert failure.correction.parameter_updates == {"neighbor_skin": 12.0}
    assert diagnose(template, tmp_path / "1", parameters, atoms) == failure.correction
    result = run_calculation(template, profile, tmp_path / "2", atoms,
                             failure.correction.apply(parameters), "md")
    assert result.converged


def test_out_of_range_atoms_of_a_pppm_run(template, tmp_path):
    directory = run_lmp(tmp_path / "run", """units real
atom_style full
region box block 0 20 0 20 0 20
create_box 1 box
create_atoms 1 random 20 12345 box
mass 1 16.0
set atom 1*10 charge 0.5
set atom 11*20 charge -0.5
pair_style lj/cut/coul/long 8.0
pair_coeff 1 1 0.2 3.0
kspace_style pppm 1e-4
velocity all create 300 1
fix 1 all nve
timestep 50
thermo 1
run 200
""")
    assert "Out of range atoms - cannot compute PPPM" in (directory / "log.lammps").read_text()
    assert handlers_firing(template, directory) == {"out_of_range_atoms"}


def test_non_finite_thermodynamics_of_overlapping_atoms(template, tmp_path):
    directory = run_lmp(tmp_path / "run", """units metal
atom_style atomic
region box block 0 10 0 10 0 10
create_box 1 box
mass 1 1.0
create_atoms 1 single 5 5 5
create_atoms 1 single 5 5 5
pair_style lj/cut 3.0
pair_coeff * * 0.01 2.0
thermo_style custom step temp pe etotal press
fix 1 all nve
thermo 1
run 3
""")
    assert "nan" in (directory / "log.lammps").read_text()
    assert handlers_firing(template, directory) == {"non_finite_thermo"}
    assert "PotEng" in LammpsNonFiniteThermo().found(directory)
    with pytest.raises(NoCorrection, match="minimisation or static"):
        LammpsNonFiniteThermo().correct(directory, {}, bulk("Cu"))


def test_missing_bond_atoms_message(template, tmp_path):
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / "log.lammps").write_text(
        "LAMMPS (29 Oct 2020)\nERROR on proc 1: Bond atoms 1 2 missing at step 3 "
        "(src/ntopo_bond_all.cpp:59)\nLast command: run 20\n")
    (directory / "parameters.json").write_text(
        '{"code": "lammps", "calculation": "md", "parameters": {}}')
    assert handlers_firing(template, directory) == {"bond_atoms_missing"}
    correction = LammpsBondAtomsMissing().correct(directory, {"timestep": 2.0}, bulk("Cu"))
    assert correction.parameter_updates == {"timestep": 1.0}
