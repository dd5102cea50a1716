"""LAMMPS: cell frames, inputs, real runs (EAM copper), H5MD trajectories and handlers.

Tests that run ``lmp`` are marked ``programs`` and fail, never skip, without it.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.eam import EAM

from matdx.codes.base import diagnose, run_calculation
from matdx.codes.errors import CalculationFailed, InputError, NoCorrection
from matdx.codes.lammps import (
    DEFAULT_POTENTIALS_DIR,
    LammpsLostAtoms,
    LammpsTemplate,
    lammps_frame,
    read_dump,
)
from matdx.codes.trajectory import TrajectoryReader
from tests.codes.helpers import handlers_firing, profile_for, require

CU = {"pair_style": "eam", "pair_coeff": ["* * Cu_u3.eam"]}
POTENTIAL = f"{DEFAULT_POTENTIALS_DIR}/Cu_u3.eam"
programs = pytest.mark.programs


@pytest.fixture(scope="module")
def template() -> LammpsTemplate:
    return LammpsTemplate()


@pytest.fixture(scope="module")
def profile(template):
    require("lmp", DEFAULT_POTENTIALS_DIR)
    return profile_for(template)


def copper(a: float = 3.61, repeat: int = 2) -> Atoms:
    return bulk("Cu", "fcc", a=a, cubic=True).repeat((repeat, repeat, repeat))


def ase_eam(atoms: Atoms) -> Atoms:
    atoms = atoms.copy()
    atoms.calc = EAM(potential=POTENTIAL)
    return atoms


# --------------------------------------------------------------------------- cell frames


@pytest.mark.parametrize("seed", range(5))
def test_lammps_frame_is_the_same_lattice_rotated(seed):
    rng = np.random.default_rng(seed)
    cell = np.eye(3) * 4 + rng.normal(scale=2.0, size=(3, 3))
    if np.linalg.det(cell) < 0:
        cell[[0, 1]] = cell[[1, 0]]
    frame = lammps_frame(cell)
    tri = frame.lammps_cell
    assert np.allclose(np.triu(tri, 1), 0) and np.all(np.diag(tri) > 0)
    assert abs(tri[1, 0]) <= tri[0, 0] / 2 + 1e-9 and abs(tri[2, 0]) <= tri[0, 0] / 2 + 1e-9
    assert abs(tri[2, 1]) <= tri[1, 1] / 2 + 1e-9
    assert abs(round(np.linalg.det(frame.transform))) == 1
    assert np.allclose(frame.rotation @ frame.rotation.T, np.eye(3))
    assert np.allclose(frame.transform @ cell @ frame.rotation, tri)
    assert np.allclose(frame.to_input_cell(tri), cell)


def test_left_handed_and_singular_cells_are_rejected():
    with pytest.raises(InputError, match="left-handed"):
        lammps_frame(np.diag([3.0, 3.0, -3.0]))
    with pytest.raises(InputError, match="singular"):
        lammps_frame(np.zeros((3, 3)))


# --------------------------------------------------------------------------- inputs


@programs
def test_write_input_copies_potentials_and_keeps_inputs(template, profile, tmp_path):
    atoms = bulk("Ni", "fcc", a=3.52, cubic=True)
    atoms[0].symbol = "Cu"
    parameters = {"pair_style": "eam/alloy", "pair_coeff": "* * CuNi.eam.alloy {elements}",
                  "steps": 10, "temperature": 300}
    before = atoms.copy()
    template.write_input(tmp_path, atoms, parameters, "md", profile=profile)
    assert atoms == before and parameters["pair_coeff"] == "* * CuNi.eam.alloy {elements}"
    script = (tmp_path / "in.lammps").read_text()
    assert "pair_coeff * * potentials/CuNi.eam.alloy Ni Cu" in script  # types by atomic number
    assert "fix integrate all nvt temp 300.0 300.0 0.1" in script
    assert "velocity all create 300.0 4928459" in script
    assert (tmp_path / "potentials" / "CuNi.eam.alloy").is_file()
    data = (tmp_path / "structure.data").read_text()
    assert "4 atoms" in data and "2 atom types" in data and "xy xz yz" not in data


@programs
@pytest.mark.parametrize(
    ("parameters", "calculation", "message"),
    [
        ({"pair_coeff": ["* * Cu_u3.eam"]}, "static", "pair_style"),
        ({**CU, "steps": 10, "ensemble": "nph"}, "md", "ensemble"),
        ({**CU, "steps": 10}, "md", "temperature is required"),
        ({**CU, "temperature": 300}, "md", "steps"),
        ({**CU, "thermo": 5}, "static", "unknown keys"),
        ({**CU, "steps": 10, "temperature": 300, "initial_temperature": None}, "md", "velocities"),
    ],
)
def test_bad_inputs_are_rejected(template, profile, tmp_path, parameters, calculation, message):
    with pytest.raises(InputError, match=message):
        template.write_input(tmp_path, copper(), parameters, calculation, profile=profile)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- real runs


@programs
def test_static_matches_ase_eam_including_stress_sign(template, profile, tmp_path):
    for name, a in (("compressed", 3.50), ("stretched", 3.75)):
        atoms = copper(a)
        result = run_calculation(template, profile, tmp_path / name, atoms, CU, "static")
        reference = ase_eam(atoms)
        assert result.converged and result.code_version.startswith("29 Sep 2021")
        assert result.energy == pytest.approx(reference.get_potential_energy(), rel=2e-3)
        stress = reference.get_stress(voigt=False)
        # two EAM implementations (spline interpolation of the same tables): within 1 %
        assert np.allclose(result.stress, stress, atol=1e-2 * abs(stress[0, 0]))
        sign = -1 if name == "compressed" else 1
        assert np.all(np.sign(np.diag(result.stress)) == sign)


@programs
def test_triclinic_cell_results_come_back_in_the_input_frame(template, profile, tmp_path):
    atoms = bulk("Cu", "fcc", a=3.61).repeat((3, 3, 3))  # primitive: tilted cell
    atoms.rattle(0.03, seed=4)
    result = run_calculation(template, profile, tmp_path, atoms, CU, "static")
    reference = ase_eam(atoms)
    forces, stress = reference.get_forces(), reference.get_stress(voigt=False)
    # a wrong rotation would scramble the vectors; the two EAM codes agree to 0.5 %
    assert np.allclose(result.forces, forces, rtol=0, atol=5e-3 * np.abs(forces).max())
    # the shear (deviatoric) part checks the rotation; the codes differ by a small pressure
    def deviatoric(tensor):
        return tensor - np.trace(tensor) / 3 * np.eye(3)

    assert np.allclose(deviatoric(result.stress), deviatoric(stress), rtol=0, atol=2e-5)
    assert np.trace(result.stress) / 3 == pytest.approx(np.trace(stress) / 3, abs=1e-3)
    assert np.allclose(result.structure.positions, atoms.positions, atol=1e-8)
    assert np.allclose(result.structure.cell.array, atoms.cell.array, atol=1e-8)


@programs
def test_stress_is_the_strain_derivative_of_the_energy(template, profile, tmp_path):
    atoms = bulk("Cu", "fcc", a=3.55).repeat((3, 3, 3))
    atoms.rattle(0.02, seed=1)
    energies = {}
    for sign in (-1, 1):
        strained = atoms.copy()
        strain = np.eye(3)
        strain[0, 1] = strain[1, 0] = sign * 5e-4  # symmetric shear ε_xy
        strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        energies[sign] = run_calculation(template, profile, tmp_path / str(sign), strained, CU,
                                         "static").energy
    center = run_calculation(template, profile, tmp_path / "0", atoms, CU, "static")
    derivative = (energies[1] - energies[-1]) / (2 * 5e-4) / atoms.get_volume()
    assert derivative == pytest.approx(2 * center.stress[0, 1], rel=1e-3)


@programs
def test_nvt_trajectory_frames_cell_species(template, profile, tmp_path):
    atoms = copper(repeat=3)
    parameters = {**CU, "steps": 100, "timestep": 2.0, "temperature": 300, "dump_every": 10}
    result = run_calculation(template, profile, tmp_path, atoms, parameters, "md")
    assert result.converged and result.trajectory == "trajectory.h5"
    with TrajectoryReader(tmp_path / result.trajectory) as reader:
        frames = reader.read()
        assert reader.n_frames == 11 and reader.n_atoms == 108
        assert reader.numbers.tolist() == [29] * 108
        assert sorted(reader.observables) == [
            "kinetic_energy", "potential_energy", "temperature", "total_energy"
        ]
    assert np.allclose(frames.times, np.arange(0, 201, 20.0))  # fs
    assert frames.steps.tolist() == list(range(0, 101, 10))
    assert np.allclose(frames.cells, atoms.cell.array)  # NVT: the box never changes
    assert np.allclose(frames.positions[0], atoms.positions, atol=1e-9)
    assert frames.observables["temperature"][0] == pytest.approx(300.0, rel=1e-6)
    assert frames.velocities is not None and frames.forces is not None
    # kinetic energy of the frame velocities (Å/fs) agrees with the thermo output (eV)
    mass = atoms.get_masses()[0] * 1.66053906660e-27
    ke = 0.5 * mass * np.sum((frames.velocities[-1] * 1e5) ** 2) / 1.602176634e-19
    # rel 2e-4: the funcfl file sets the mass to 63.55 u (ASE: 63.546 u)
    assert ke == pytest.approx(frames.observables["kinetic_energy"][-1], rel=2e-4)
    assert result.structure.get_velocities().shape == (108, 3)


@programs
def test_md_seed_is_reproducible(template, profile, tmp_path):
    parameters = {**CU, "steps": 20, "temperature": 500, "dump_every": 20, "thermostat":
                  "langevin"}
    positions = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        result = run_calculation(template, profile, tmp_path / name, copper(),
                                 {**parameters, "seed": seed}, "md")
        positions.append(result.structure.positions)
    assert np.array_equal(positions[0], positions[1])
    assert not np.allclose(positions[0], positions[2])
    assert "fix thermostat all langevin" in (tmp_path / "a" / "in.lammps").read_text()


@programs
def test_npt_changes_the_box(template, profile, tmp_path):
    atoms = copper(a=3.50, repeat=3)  # compressed: expands at zero pressure
    parameters = {**CU, "steps": 200, "temperature": 300, "ensemble": "npt", "pressure": 0.0,
                  "dump_every": 50}
    result = run_calculation(template, profile, tmp_path, atoms, parameters, "md")
    with TrajectoryReader(tmp_path / result.trajectory) as reader:
        cells = reader.read().cells
    volumes = np.abs(np.linalg.det(cells))
    assert volumes[-1] > volumes[0] * 1.01
    assert np.allclose(result.structure.cell.array, cells[-1])


@programs
def test_relax_and_vc_relax(template, profile, tmp_path):
    atoms = copper()
    atoms.rattle(0.05, seed=1)
    relaxed = run_calculation(template, profile, tmp_path / "relax", atoms,
                              {**CU, "relax": {"ftol": 1e-5}}, "relax")
    assert relaxed.ionic_converged and np.abs(relaxed.forces).max() < 1e-4
    with TrajectoryReader(tmp_path / "relax" / relaxed.trajectory) as reader:
        energies = reader.read().observables["potential_energy"]
    assert energies[-1] < energies[0]
    cell = run_calculation(template, profile, tmp_path / "vc", copper(a=3.5), CU, "vc-relax")
    assert cell.ionic_converged
    assert cell.structure.cell.lengths()[0] / 2 == pytest.approx(3.615, abs=2e-3)  # Cu_u3 a0
    assert np.abs(cell.stress).max() < 1e-5


# --------------------------------------------------------------------------- handlers


@pytest.fixture(scope="module")
def runs(template, profile, tmp_path_factory):
    """Real LAMMPS outputs: converged ones and one failure of each kind."""
    root = tmp_path_factory.mktemp("lammps-runs")
    md = {**CU, "steps": 200, "temperature": 1000}
    rattled = copper(repeat=3)
    rattled.rattle(0.1, seed=2)
    run_calculation(template, profile, root / "converged", copper(), CU, "static")
    run_calculation(template, profile, root / "converged_md", copper(repeat=3), md, "md")
    cases = {
        "lost_atoms": (copper(repeat=3), {**md, "timestep": 40.0}, "md", None),
        "ionic_unconverged": (rattled, {**CU, "relax": {"maxiter": 2}}, "relax", None),
        "walltime": (copper(repeat=10), {**md, "steps": 10**6, "dump_every": 100}, "md", 2.0),
    }
    for name, (atoms, parameters, calculation, timeout) in cases.items():
        with pytest.raises(CalculationFailed):
            run_calculation(template, profile, root / name, atoms, parameters, calculation,
                            timeout_s=timeout)
    return root, cases


@programs
@pytest.mark.parametrize(
    "case", ["converged", "converged_md", "lost_atoms", "ionic_unconverged", "walltime"]
)
def test_each_handler_detects_only_its_case(template, runs, case):
    root, _ = runs
    expected = set() if case.startswith("converged") else {case}
    assert handlers_firing(template, root / case) == expected


@programs
def test_lost_atoms_halves_the_timestep(template, profile, runs, tmp_path):
    root, cases = runs
    atoms, parameters, _, _ = cases["lost_atoms"]
    correction = diagnose(template, root / "lost_atoms", parameters, atoms)
    assert correction.parameter_updates == {"timestep": 20.0}
    result = run_calculation(template, profile, tmp_path, atoms, correction.apply(parameters),
                             "md")
    assert result.converged
    with pytest.raises(NoCorrection, match="minimisation"):
        LammpsLostAtoms().correct(root / "ionic_unconverged", {}, atoms)


@programs
def test_unconverged_minimisation_restarts_from_the_last_frame(template, profile, runs,
                                                               tmp_path):
    root, cases = runs
    atoms, parameters, _, _ = cases["ionic_unconverged"]
    correction = diagnose(template, root / "ionic_unconverged", parameters, atoms)
    assert correction.parameter_updates == {"relax": {"maxiter": 4, "maxeval": 20000}}
    last = read_dump(root / "ionic_unconverged" / "traj.dump")[-1]
    assert np.allclose(correction.restart_structure.positions[:, 0], last.columns["xu"])
    result = run_calculation(template, profile, tmp_path, correction.restart_structure,
                             {**parameters, "relax": {"maxiter": 1000}}, "relax")
    assert result.ionic_converged


@programs
def test_killed_md_continues_with_its_velocities(template, runs):
    root, cases = runs
    atoms, parameters, _, _ = cases["walltime"]
    correction = diagnose(template, root / "walltime", parameters, atoms)
    frames = read_dump(root / "walltime" / "traj.dump")
    done = frames[-1].step
    assert correction.parameter_updates == {"steps": 10**6 - done, "initial_temperature": None}
    assert correction.resources == {"walltime_factor": 1.5}
    velocities = correction.restart_structure.get_velocities()
    assert np.abs(velocities).max() > 0
