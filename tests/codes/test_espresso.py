"""Quantum ESPRESSO: pseudopotential choice, pw.x inputs, real runs, parser and handlers.

Every test here is marked ``programs``: it runs the real ``pw.x`` 6.7 from Debian (or reads
its pseudopotential library) and fails, never skips, when it is not installed.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.constraints import FixAtoms
from ase.units import GPa

from matdx.codes.base import diagnose, read_parameters_record, run_calculation
from matdx.codes.errors import (
    CalculationFailed,
    InputError,
    NoCorrection,
    PseudopotentialNotFound,
    ReadError,
    SCFError,
)
from matdx.codes.espresso import (
    DEFAULT_PSEUDO_DIR,
    EspressoTemplate,
    kpoint_grid,
    parse_pw_output,
    read_upf,
    select_pseudopotentials,
)
from matdx.codes.espresso_handlers import EspressoDiagonalization
from matdx.codes.execution import read_execution
from matdx.codes.results import file_sha256
from tests.codes.helpers import PW_AL_SMEARING as AL
from tests.codes.helpers import PW_SI as SI
from tests.codes.helpers import handlers_firing, profile_for, pw_template, require

pytestmark = pytest.mark.programs



@pytest.fixture(scope="module")
def template() -> EspressoTemplate:
    return pw_template()


@pytest.fixture(scope="module")
def profile(template):
    return profile_for(template)


def silicon(a: float = 5.43) -> Atoms:
    return bulk("Si", "diamond", a=a)


@pytest.fixture(scope="module")
def si_scf(template, profile, tmp_path_factory):
    directory = tmp_path_factory.mktemp("si-scf")
    return directory, run_calculation(template, profile, directory, silicon(), SI, "static")


# --------------------------------------------------------------------------- pseudopotentials


def test_pseudopotentials_prefer_pbe_deterministically(template):
    chosen = select_pseudopotentials(["O", "Si", "H"])
    assert {e: p.functional for e, p in chosen.items()} == {"O": "PBE", "Si": "PBE", "H": "PBE"}
    assert not any(p.spin_orbit or p.coulomb for p in chosen.values())
    assert chosen["H"].name != "H.coulomb-ae.UPF"  # a bare Coulomb potential is never chosen
    again = select_pseudopotentials(["H", "Si", "O"])
    assert {e: p.name for e, p in again.items()} == {e: p.name for e, p in chosen.items()}


def test_species_share_one_functional(template):
    """Al has only an LDA file here: PBE silicon would make pw.x stop on mixed functionals."""
    chosen = select_pseudopotentials(["Si", "Al"])
    assert {p.functional for p in chosen.values()} == {"LDA"}


def test_missing_element_names_element_and_directory(template):
    with pytest.raises(PseudopotentialNotFound) as info:
        select_pseudopotentials(["Si", "Zr"])
    assert info.value.element == "Zr" and info.value.directory == DEFAULT_PSEUDO_DIR
    with pytest.raises(PseudopotentialNotFound, match=r"'Si'.*Si\.nonexistent\.UPF"):
        select_pseudopotentials(["Si"], explicit={"Si": "Si.nonexistent.UPF"})


def test_upf_headers_v1_and_v2(template):
    v2 = read_upf(Path(DEFAULT_PSEUDO_DIR) / "Si.pbe-nl-rrkjus_psl.1.0.0.UPF")
    assert (v2.element, v2.kind, v2.functional, v2.z_valence) == ("Si", "US", "PBE", 4.0)
    assert v2.wfc_cutoff == 44.0 and v2.rho_cutoff == 175.0
    v1 = read_upf(Path(DEFAULT_PSEUDO_DIR) / "Si.rel-pbe-rrkj.UPF")
    assert (v1.element, v1.kind, v1.functional, v1.spin_orbit) == ("Si", "NC", "PBE", True)


# --------------------------------------------------------------------------- input writing


def test_write_input_never_mutates_and_resolves_defaults(template, profile, tmp_path):
    atoms = bulk("Fe", "bcc", a=2.87, cubic=True)
    atoms.set_initial_magnetic_moments([2.0, -2.0])  # antiferromagnet: two species
    parameters = {
        "system": {"ecutwfc": 30.0},
        "kpoints": {"density": 3.0},
        "pseudopotentials": {"Fe": "Fe.pbe-nd-rrkjus.UPF"},  # ultrasoft, suggests no cutoff
    }
    snapshot = {
        "system": {"ecutwfc": 30.0},
        "kpoints": {"density": 3.0},
        "pseudopotentials": {"Fe": "Fe.pbe-nd-rrkjus.UPF"},
    }
    before = atoms.copy()
    template.write_input(tmp_path, atoms, parameters, "relax", profile=profile)
    assert parameters == snapshot and atoms == before
    text = (tmp_path / "pw.in").read_text()
    assert "nat = 2" in text and "ntyp = 2" in text and "nspin = 2" in text
    assert re.search(r"starting_magnetization\(1\) = 0\.25", text)
    assert re.search(r"starting_magnetization\(2\) = -0\.25", text)
    assert "&IONS" in text and "&CELL" not in text
    grid = kpoint_grid(atoms.cell, 3.0)
    assert f"K_POINTS automatic\n{grid[0]} {grid[1]} {grid[2]} 0 0 0" in text
    record = read_parameters_record(tmp_path)
    species = record["parameters"]["species"]
    assert [s["label"] for s in species] == ["Fe", "Fe1"]
    assert (tmp_path / "pseudo" / "Fe.pbe-nd-rrkjus.UPF").is_file()
    assert record["parameters"]["system"]["ecutrho"] == 240.0  # ultrasoft: 8 x ecutwfc


def test_cutoffs_default_to_the_pseudopotential_suggestions(template, profile, tmp_path):
    parameters = {"kpoints": {"density": 3.0},
                  "pseudopotentials": {"Si": "Si.pbe-nl-rrkjus_psl.1.0.0.UPF"}}
    template.write_input(tmp_path, silicon(), parameters, "static", profile=profile)
    system = read_parameters_record(tmp_path)["parameters"]["system"]
    assert (system["ecutwfc"], system["ecutrho"]) == (44.0, 352.0)  # max(175, 8 x 44)
    assert system["nbnd"] == 8  # fixed occupations: empty bands for the gap


def test_fixed_atoms_are_written_as_if_pos(template, profile, tmp_path):
    atoms = silicon()
    atoms.set_constraint(FixAtoms(indices=[0]))
    template.write_input(tmp_path, atoms, SI, "relax", profile=profile)
    lines = (tmp_path / "pw.in").read_text().split("ATOMIC_POSITIONS angstrom\n")[1].splitlines()
    assert lines[0].endswith(" 0 0 0") and lines[1].endswith(" 1 1 1")


@pytest.mark.parametrize(
    ("parameters", "calculation", "message"),
    [
        ({**SI, "system": {"nat": 3, "ecutwfc": 20}}, "static", "set by the template"),
        ({**SI, "smearing": 0.1}, "static", "unknown keys"),
        ({**SI, "kpoints": {"grid": [0, 1, 1]}}, "static", "kpoints"),
        (SI, "nscf", "parent_directory"),
        ({"kpoints": {"density": 3.0}}, "static", "ecutwfc"),
    ],
)
def test_bad_inputs_are_rejected_before_writing(template, profile, tmp_path, parameters,
                                                calculation, message):
    atoms = bulk("Si", "diamond", a=5.43) if "ecutwfc" in str(parameters) else bulk("Al")
    with pytest.raises(InputError, match=message):
        template.write_input(tmp_path, atoms, parameters, calculation, profile=profile)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- real runs


def test_si_scf_energy_forces_stress(si_scf, template):
    directory, result = si_scf
    assert result.converged and result.scf_converged and result.ionic_converged is None
    assert result.code == "espresso" and result.code_version == "6.7MaX"
    assert result.calculation == "static"
    assert -216 < result.energy < -212  # two Si atoms, PBE norm-conserving: about -107 eV each
    assert result.forces.shape == (2, 3) and np.abs(result.forces).max() < 1e-4  # symmetry
    assert np.allclose(result.stress, result.stress.T)
    assert result.n_scf_steps > 0 and result.walltime_s > 0
    assert 0.3 < result.band_gap < 1.0  # PBE silicon on a coarse grid
    assert result.eigenvalues.shape[0] == 1 and result.eigenvalues.shape[2] == 8
    assert math.isclose(result.kweights.sum(), 1.0)
    assert result.kpoints.shape == (result.eigenvalues.shape[1], 3)
    upf = directory / "pseudo" / "Si.pbe-rrkj.UPF"
    assert result.pseudopotentials == [
        {"element": "Si", "name": "Si.pbe-rrkj.UPF", "sha256": file_sha256(upf),
         "functional": "PBE"}
    ]
    assert result.parameters["system"]["ecutwfc"] == 20.0
    assert result.parameters["control"]["calculation"] == "scf"


def test_stress_sign_under_compression_and_tension(template, profile, tmp_path):
    """ASE convention: negative under compression, positive under tension, and equal to the
    energy derivative: dE/dV = tr(σ)/3 (central difference of ±0.5 % in the lattice constant,
    on a fixed k grid)."""
    fixed = {**SI, "kpoints": {"grid": [4, 4, 4]}}

    def run(name: str, a: float):
        return run_calculation(template, profile, tmp_path / name, silicon(a), fixed, "static")

    compressed, stretched = run("compressed", 5.25), run("stretched", 5.65)
    assert np.all(np.diag(compressed.stress) < 0) and np.all(np.diag(stretched.stress) > 0)
    assert np.allclose(np.diag(compressed.stress), compressed.stress[0, 0])  # cubic: isotropic
    assert abs(compressed.stress[0, 0] / GPa) > 5  # several GPa at 3 % compression
    low, high = run("low", 5.25 * 0.995), run("high", 5.25 * 1.005)
    volume = silicon(5.25 * 1.005).get_volume() - silicon(5.25 * 0.995).get_volume()
    slope = (high.energy - low.energy) / volume
    assert slope == pytest.approx(np.trace(compressed.stress) / 3, rel=0.05)


def test_al_with_smearing_is_a_metal(template, profile, tmp_path):
    result = run_calculation(template, profile, tmp_path, bulk("Al", "fcc", a=4.05), AL,
                             "static")
    assert result.converged and result.band_gap == 0.0
    assert result.fermi_level is not None
    assert result.occupations is not None
    partial = (result.occupations > 0.01) & (result.occupations < 0.99)
    assert partial.any()
    assert result.pseudopotentials[0]["name"] == "Al.pz-vbc.UPF"  # the only Al file


def test_relax_moves_atoms_to_the_symmetric_site(template, profile, tmp_path):
    atoms = silicon()
    atoms.positions[1] += [0.1, 0.0, 0.0]
    result = run_calculation(template, profile, tmp_path, atoms, SI, "relax")
    assert result.converged and result.ionic_converged
    assert np.abs(result.forces).max() < 1e-3 * 13.6057 / 0.529177  # forc_conv_thr in eV/Å
    frames = result.frames
    assert frames is not None and len(frames.positions) == result.n_ionic_steps >= 2
    energies = frames.observables["potential_energy"]
    assert energies[-1] < energies[0] and energies[-1] == pytest.approx(result.energy)
    assert np.allclose(frames.positions[0], atoms.positions)
    bond = result.structure.get_distance(0, 1, mic=True)
    assert bond == pytest.approx(5.43 * math.sqrt(3) / 4, abs=0.02)


def test_vc_relax_expands_a_compressed_cell(template, profile, tmp_path):
    atoms = silicon(5.25)
    result = run_calculation(template, profile, tmp_path, atoms, SI, "vc-relax")
    assert result.converged and result.ionic_converged
    assert result.structure.get_volume() > atoms.get_volume() * 1.05
    assert np.abs(result.stress).max() < 0.5 * GPa
    assert result.frames.cells.shape == (result.n_ionic_steps, 3, 3)


def test_nscf_and_bands_from_the_scf_charge_density(si_scf, template, profile, tmp_path):
    parent, scf = si_scf
    nscf = run_calculation(
        template, profile, tmp_path / "nscf", silicon(),
        {**SI, "kpoints": {"density": 3.5}, "parent_directory": str(parent)}, "nscf",
    )
    assert nscf.converged and nscf.scf_converged is None
    assert nscf.eigenvalues.shape[1] > scf.eigenvalues.shape[1]  # denser grid
    assert nscf.band_gap == pytest.approx(scf.band_gap, abs=0.15)
    bands = run_calculation(
        template, profile, tmp_path / "bands", silicon(),
        {**SI, "kpoints": {"path": "LGX", "npoints": 25}, "parent_directory": str(parent)},
        "bands",
    )
    assert bands.eigenvalues.shape == (1, 25, 8)
    assert bands.parameters["kpoints"]["path"] == "LGX"
    assert np.allclose(bands.kpoints[0], [0.5, 0.5, 0.5]) and np.allclose(bands.kpoints[-1],
                                                                          [0.5, 0.0, 0.5])
    assert bands.fermi_level == pytest.approx(scf.fermi_level)  # from the parent SCF
    gamma = bands.eigenvalues[0, np.argmin(np.linalg.norm(bands.kpoints, axis=1))]
    assert gamma[0] == pytest.approx(scf.eigenvalues[0, 0, 0], abs=1e-3)  # Γ is on both


def test_mpi_run_matches_serial(si_scf, template, profile, tmp_path):
    require("mpirun")
    _, serial = si_scf
    parallel = run_calculation(template, profile, tmp_path, silicon(), SI, "static", ranks=2)
    assert parallel.energy == pytest.approx(serial.energy, abs=1e-5)
    assert re.search(r"running on\s+2 processors", (tmp_path / "pw.out").read_text())
    record = read_execution(tmp_path)
    assert record.argv[:3] == ["mpirun", "-np", "2"] and record.ranks == 2


def test_truncated_output_raises_read_error(si_scf, template, tmp_path):
    directory, _ = si_scf
    text = (directory / "pw.out").read_text()
    (tmp_path / "pw.out").write_text(text[: len(text) // 2])
    with pytest.raises(ReadError, match="truncated"):
        template.read_results(tmp_path)
    with pytest.raises(ReadError, match="missing"):
        template.read_results(tmp_path / "nowhere")


# --------------------------------------------------------------------------- failures


def test_injected_scf_failure_is_diagnosed_and_corrected(si_scf, template, profile, tmp_path):
    _, reference = si_scf
    parameters = {**SI, "electrons": {"electron_maxstep": 3}}
    with pytest.raises(SCFError) as info:
        run_calculation(template, profile, tmp_path / "fail", silicon(), parameters, "static")
    err = info.value
    assert err.kind == "numerical" and err.handlers == ("scf_unconverged",)
    updates = err.correction.parameter_updates
    assert updates == {"electrons": {"mixing_beta": 0.35, "electron_maxstep": 100}}
    assert diagnose(template, tmp_path / "fail", parameters, silicon()) == err.correction
    fixed = run_calculation(template, profile, tmp_path / "fixed", silicon(),
                            err.correction.apply(parameters), "static")
    assert fixed.converged and fixed.energy == pytest.approx(reference.energy, abs=1e-4)


def test_scf_ladder_escalates_to_local_tf(template):
    handler = next(h for h in template.handlers if h.name == "scf_unconverged")
    second = handler.correct(Path("."), {"electrons": {"mixing_beta": 0.35}}, silicon())
    assert second.parameter_updates["electrons"]["mixing_mode"] == "local-TF"
    third = handler.correct(Path("."), {"electrons": {"mixing_mode": "local-TF",
                                                      "mixing_beta": 0.175}}, silicon())
    assert third.parameter_updates["electrons"]["mixing_beta"] == pytest.approx(0.0875)
    with pytest.raises(NoCorrection):
        handler.correct(Path("."), {"electrons": {"mixing_mode": "local-TF",
                                                  "mixing_beta": 0.04}}, silicon())


def test_unconverged_relaxation_is_continued_until_converged(template, profile, tmp_path):
    """The engine's retry loop in miniature: apply corrections within the handler's budget."""
    atoms = silicon()
    atoms.positions[1] += [0.1, 0.0, 0.0]
    parameters = {**SI, "control": {"nstep": 1}}
    applied: dict[str, int] = {}
    result = None
    for attempt in range(4):
        directory = tmp_path / str(attempt)
        try:
            result = run_calculation(template, profile, directory, atoms, parameters, "relax",
                                     applied=applied)
        except CalculationFailed as err:
            failure = err
        else:
            break
        assert failure.handlers == ("ionic_unconverged",) and failure.correction is not None
        correction = failure.correction
        last = parse_pw_output((directory / "pw.out").read_text()).geometries[-1]
        assert np.allclose(correction.restart_structure.positions, last.positions)
        atoms, parameters = correction.restart_structure, correction.apply(parameters)
        applied[correction.handler] = applied.get(correction.handler, 0) + 1
    assert result is not None, "relaxation did not converge within the ionic handler's budget"
    assert result.ionic_converged and applied["ionic_unconverged"] >= 1
    assert parameters["control"]["nstep"] == 2 ** applied["ionic_unconverged"]


def test_walltime_stop_restarts_from_the_restart_files(template, profile, tmp_path):
    atoms = silicon()
    atoms.positions[1] += [0.1, 0.0, 0.0]
    parameters = {**SI, "control": {"max_seconds": 0.3}}
    with pytest.raises(CalculationFailed) as info:
        run_calculation(template, profile, tmp_path / "stopped", atoms, parameters, "relax")
    err = info.value
    assert err.kind == "resources" and err.handlers == ("walltime",)
    correction = err.correction
    assert correction.resources == {"walltime_factor": 1.5}
    assert correction.parameter_updates == {
        "control": {"restart_mode": "restart", "max_seconds": 0.45},
        "parent_directory": str((tmp_path / "stopped").resolve()),
    }
    resumed = correction.apply(parameters)
    resumed["control"]["max_seconds"] = 600  # the next allocation has enough time
    result = run_calculation(template, profile, tmp_path / "resumed", atoms, resumed, "relax")
    assert result.converged and (tmp_path / "resumed" / "out").is_dir()
    assert "restart" in (tmp_path / "resumed" / "pw.in").read_text()


# --------------------------------------------------------------------------- handler matrix


@pytest.fixture(scope="module")
def failed_runs(template, profile, tmp_path_factory, si_scf):
    """Real pw.x outputs of one failure each (and a converged run)."""
    root = tmp_path_factory.mktemp("qe-failures")
    displaced = silicon()
    displaced.positions[1] += [0.1, 0.0, 0.0]
    overlapping = Atoms("Fe3", positions=[[0, 0, 0], [1.0, 0, 0], [0, 1.0, 0.01]],
                        cell=[3, 3, 3], pbc=True)
    cases = {
        "scf_unconverged": (silicon(), {**SI, "electrons": {"electron_maxstep": 3}}, "static"),
        "ionic_unconverged": (displaced, {**SI, "control": {"nstep": 1}}, "relax"),
        "too_few_bands": (bulk("Al", "fcc", a=4.05),
                          {**AL, "system": {**AL["system"], "nbnd": 1}}, "static"),
        "smearing_needed": (bulk("Al", "fcc", a=4.05),
                            {"system": {"ecutwfc": 15.0}, "kpoints": {"density": 3.0}},
                            "static"),
        "diagonalization": (overlapping, {
            "system": {"ecutwfc": 20.0, "ecutrho": 80.0, "nbnd": 30,
                       "occupations": "smearing", "degauss": 0.02},
            "kpoints": {"gamma": True}, "pseudopotentials": {"Fe": "Fe.pbe-nd-rrkjus.UPF"},
        }, "static"),
        "walltime": (displaced, {**SI, "control": {"max_seconds": 0.3}}, "relax"),
    }
    runs = {"converged": (si_scf[0], silicon(), SI)}
    for name, (atoms, parameters, calculation) in cases.items():
        with pytest.raises(CalculationFailed):
            run_calculation(template, profile, root / name, atoms, parameters, calculation)
        runs[name] = (root / name, atoms, parameters)
    return runs


@pytest.mark.parametrize(
    "case",
    ["converged", "scf_unconverged", "ionic_unconverged", "too_few_bands", "smearing_needed",
     "diagonalization", "walltime"],
)
def test_each_handler_detects_only_its_case(template, failed_runs, case):
    directory, _, _ = failed_runs[case]
    expected = set() if case == "converged" else {case}
    assert handlers_firing(template, directory) == expected


def test_corrections_of_real_failures(template, profile, failed_runs, tmp_path):
    directory, atoms, parameters = failed_runs["too_few_bands"]
    correction = diagnose(template, directory, parameters, atoms)
    assert correction.parameter_updates == {"system": {"nbnd": 6}}  # 3 electrons: 3/2 + 4 bands
    fixed = run_calculation(template, profile, tmp_path / "bands", atoms,
                            correction.apply(parameters), "static")
    assert fixed.converged

    directory, atoms, parameters = failed_runs["smearing_needed"]
    correction = diagnose(template, directory, parameters, atoms)
    assert correction.parameter_updates == {
        "system": {"occupations": "smearing", "smearing": "mv", "degauss": 0.01}
    }
    fixed = run_calculation(template, profile, tmp_path / "smearing", atoms,
                            correction.apply(parameters), "static")
    assert fixed.converged and fixed.band_gap == 0.0


def test_s_matrix_failure_of_overlapping_atoms_has_no_parameter_fix(template, failed_runs):
    directory, atoms, parameters = failed_runs["diagonalization"]
    assert "S matrix not positive definite" in (directory / "pw.out").read_text()
    handler = EspressoDiagonalization()
    with pytest.raises(NoCorrection, match=r"1\.000 Å apart"):
        handler.correct(directory, parameters, atoms)
    assert diagnose(template, directory, parameters, atoms) is None
    # the same failure for a structure whose atoms do not overlap: conjugate gradients
    sane = Atoms("Fe3", positions=[[0, 0, 0], [2.0, 0, 0], [0, 2.0, 0]], cell=[6, 6, 6], pbc=True)
    correction = handler.correct(directory, parameters, sane)
    assert correction.parameter_updates == {"electrons": {"diagonalization": "ppcg"}}
    assert correction.errors == ("s_matrix_not_positive_definite",)
    with pytest.raises(NoCorrection, match="cg"):
        handler.correct(directory, {"electrons": {"diagonalization": "cg"}}, sane)


def test_killed_relaxation_restarts_from_scratch_at_the_last_structure(template, profile,
                                                                       tmp_path):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=3)
    with pytest.raises(CalculationFailed) as info:
        run_calculation(template, profile, tmp_path, atoms, SI, "relax", timeout_s=1.5)
    err = info.value
    assert err.kind == "resources" and err.handlers == ("walltime",)
    correction = err.correction
    assert correction.parameter_updates == {"control": {"restart_mode": None},
                                            "parent_directory": None}
    printed = parse_pw_output((tmp_path / "pw.out").read_text()).geometries
    assert np.allclose(correction.restart_structure.positions, printed[-1].positions)
