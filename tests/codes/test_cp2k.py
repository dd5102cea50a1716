"""CP2K: input format, real runs (H2O, periodic H2), and handlers on recorded and real outputs.

Real runs are marked ``programs`` and fail, never skip, without CP2K. The handler fixtures
(``fixtures/cp2k``) are outputs recorded from real CP2K runs (custodian's MIT test data).
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from matdx.codes.base import diagnose, explain_failure, run_calculation
from matdx.codes.cp2k import (
    Cp2kCholesky,
    Cp2kSCF,
    Cp2kTemplate,
    format_cp2k_input,
    parse_cp2k_input,
    parse_cp2k_output,
)
from matdx.codes.errors import CalculationFailed, InputError, NoCorrection, ReadError, SCFError
from matdx.codes.handlers import deep_merge
from tests.codes.helpers import FIXTURES, handlers_firing, profile_for, require

CASES = FIXTURES / "cp2k"
H2O = {"cutoff": 300.0, "rel_cutoff": 40.0}
programs = pytest.mark.programs


@pytest.fixture(scope="module")
def template() -> Cp2kTemplate:
    return Cp2kTemplate()


@pytest.fixture(scope="module")
def profile(template):
    require("cp2k")
    return profile_for(template)


def water() -> Atoms:
    atoms = molecule("H2O")
    atoms.cell = [6.0, 6.0, 6.0]
    atoms.center()
    atoms.pbc = False
    return atoms


@pytest.fixture(scope="module")
def h2o(template, profile, tmp_path_factory):
    directory = tmp_path_factory.mktemp("h2o")
    return directory, run_calculation(template, profile, directory, water(), H2O, "static")


# --------------------------------------------------------------------------- input format


def test_input_round_trip():
    tree = {
        "GLOBAL": {"PROJECT": "x", "RUN_TYPE": "ENERGY_FORCE"},
        "FORCE_EVAL": {
            "DFT": {"SCF": {"MAX_SCF": 50, "OT": {"MINIMIZER": "DIIS"}}, "UKS": True,
                    "XC": {"XC_FUNCTIONAL": {"_": "PBE"}}, "CHARGE": None},
            "SUBSYS": {"COORD": {"_lines": ["O 0 0 0", "H 0 0 1"]},
                       "KIND": {"O": {"BASIS_SET": "DZVP"}, "H": {"BASIS_SET": "DZVP"}}},
        },
    }
    text = format_cp2k_input(tree)
    assert "&XC_FUNCTIONAL PBE" in text and "UKS .TRUE." in text and "CHARGE" not in text
    back = parse_cp2k_input(text)
    assert back["FORCE_EVAL"]["DFT"]["SCF"] == {"MAX_SCF": "50", "OT": {"MINIMIZER": "DIIS"}}
    assert back["FORCE_EVAL"]["SUBSYS"]["COORD"]["_lines"] == ["O 0 0 0", "H 0 0 1"]
    assert set(back["FORCE_EVAL"]["SUBSYS"]["KIND"]) == {"O", "H"}


def test_recorded_input_parses():
    tree = parse_cp2k_input((CASES / "cholesky" / "cp2k.inp").read_text())
    ot = tree["FORCE_EVAL"]["DFT"]["SCF"]["OT"]
    assert ot["PRECONDITIONER"] == "FULL_SINGLE_INVERSE" and ot["MINIMIZER"] == "DIIS"
    assert tree["FORCE_EVAL"]["SUBSYS"]["KIND"]["Si"]["BASIS_SET"] == "DZVP-MOLOPT-GTH"
    assert tree["FORCE_EVAL"]["SUBSYS"]["CELL"]["A"] == "13.397596 0.0 7.735104"


@pytest.mark.parametrize(
    ("atoms", "parameters", "message"),
    [
        (Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]), {}, "box"),
        (water(), {"kpoints": {"grid": [2, 2, 2]}}, "diagonalization"),
        (water(), {"scf_method": "davidson"}, "scf_method"),
        (water(), {"basis": "SZV"}, "unknown keys"),
    ],
)
def test_bad_inputs_are_rejected(template, tmp_path, atoms, parameters, message):
    with pytest.raises(InputError, match=message):
        template.write_input(tmp_path, atoms, parameters, "static")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- real runs


@programs
def test_h2o_pbe_energy_and_forces(h2o):
    _, result = h2o
    assert result.converged and result.scf_converged and result.ionic_converged is None
    assert result.code == "cp2k" and result.code_version == "2023.1"
    assert -470.0 < result.energy < -467.0  # -17.22 Ha (GTH valence electrons only)
    forces = result.forces
    assert forces.shape == (3, 3)
    # C2v: the O force lies on the z axis, the H forces mirror each other through y = 0
    assert np.abs(forces[0, :2]).max() < 1e-3 and abs(forces[0, 2]) > 0.05
    assert forces[1, 1] == pytest.approx(-forces[2, 1], abs=1e-3)
    assert forces[1, 2] == pytest.approx(forces[2, 2], abs=1e-3)
    assert result.stress is None  # non-periodic: no stress
    assert result.n_scf_steps > 0 and result.walltime_s > 0
    assert {p["element"] for p in result.pseudopotentials} == {"O", "H"}


@programs
def test_periodic_stress_sign_matches_the_energy_derivative(template, profile, tmp_path):
    """σ = (1/V) ∂E/∂ε in ASE's sign: in this small H2 box the energy rises with the volume,
    so the stress is positive (the box pulls inwards), and V tr(σ) equals dE/dε."""
    h2 = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=[2.6, 2.6, 2.6], pbc=True)
    parameters = {"cutoff": 200.0, "rel_cutoff": 30.0, "eps_scf": 1e-7}
    results = {}
    for eps in (-0.01, 0.01):
        strained = h2.copy()
        strained.set_cell(h2.cell.array * (1 + eps), scale_atoms=True)
        results[eps] = run_calculation(template, profile, tmp_path / str(eps), strained,
                                       parameters, "static")
    derivative = (results[0.01].energy - results[-0.01].energy) / 0.02  # dE/dε, isotropic
    virials = [np.trace(r.stress) * r.structure.get_volume() for r in results.values()]
    assert derivative > 0 and all(v > 0 for v in virials)
    assert derivative == pytest.approx(np.mean(virials), rel=0.01)


@programs
def test_unconverged_geometry_optimisation_restarts(template, profile, tmp_path):
    atoms = water()
    atoms.positions[1] += [0.0, 0.1, 0.05]
    parameters = {**H2O, "max_geo_steps": 1}
    with pytest.raises(CalculationFailed) as info:
        run_calculation(template, profile, tmp_path, atoms, parameters, "relax")
    err = info.value
    assert err.handlers == ("ionic_unconverged",)
    assert err.correction.parameter_updates == {"max_geo_steps": 2}
    result = template.read_results(tmp_path)
    assert result.ionic_converged is False and result.scf_converged
    assert result.frames.positions.shape == (result.n_ionic_steps, 3, 3)
    assert np.allclose(result.frames.positions[0], atoms.positions, atol=1e-6)
    assert np.allclose(err.correction.restart_structure.positions, result.structure.positions)


@programs
def test_injected_scf_failure_is_corrected(template, profile, h2o, tmp_path):
    _, reference = h2o
    parameters = {**H2O, "max_scf": 2}
    with pytest.raises(SCFError) as info:
        run_calculation(template, profile, tmp_path / "fail", water(), parameters, "static")
    correction = info.value.correction
    assert info.value.handlers == ("scf_unconverged", "custodian.UnconvergedScfErrorHandler")
    assert correction.parameter_updates == {
        "input": {"FORCE_EVAL": {"DFT": {"SCF": {
            "MAX_SCF": 100,
            "OT": {"MINIMIZER": "CG", "LINESEARCH": "2PNT"},
            "OUTER_SCF": {"MAX_SCF": 10, "EPS_SCF": 1e-6},
        }}}}
    }
    fixed = run_calculation(template, profile, tmp_path / "fixed", water(),
                            correction.apply(parameters), "static")
    assert fixed.converged and fixed.energy == pytest.approx(reference.energy, abs=1e-3)


@programs
def test_cholesky_correction_is_a_valid_cp2k_input(template, profile, h2o, tmp_path):
    """The recorded Cholesky failure's remedy, applied to a real run, is accepted by CP2K and
    gives the same energy."""
    _, reference = h2o
    correction = diagnose(template, CASES / "cholesky", {}, water())
    parameters = deep_merge(H2O, correction.parameter_updates)
    result = run_calculation(template, profile, tmp_path, water(), parameters, "static")
    assert "CHOLESKY OFF" in (tmp_path / "cp2k.inp").read_text()
    assert result.converged and result.energy == pytest.approx(reference.energy, abs=1e-3)


@programs
def test_truncated_output_raises_read_error(template, h2o, tmp_path):
    directory, _ = h2o
    text = (directory / "cp2k.out").read_text()
    (tmp_path / "cp2k.out").write_text(text[: len(text) // 2])
    (tmp_path / "parameters.json").write_text((directory / "parameters.json").read_text())
    with pytest.raises(ReadError, match="truncated"):
        template.read_results(tmp_path)


@programs
def test_converged_real_run_fires_no_handler(template, h2o):
    directory, _ = h2o
    assert handlers_firing(template, directory) == set()


# --------------------------------------------------------------------------- recorded outputs

EXPECTED = {
    "conv": set(),
    "unconverged": {"scf_unconverged"},
    "cholesky": {"cholesky", "custodian.AbortHandler"},  # matdx's correction comes first
    "oom": {"out_of_memory"},
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_each_handler_detects_only_its_case(template, case):
    """Recorded outputs: each case fires exactly its handler, the converged run none."""
    assert handlers_firing(template, CASES / case) == EXPECTED[case]


def test_recorded_unconverged_scf_gets_broyden_mixing(template):
    err = explain_failure(template, CASES / "unconverged", {}, water())
    assert isinstance(err, SCFError)
    assert err.correction.parameter_updates == {
        "input": {"FORCE_EVAL": {"DFT": {"SCF": {
            "MAX_SCF": 100,  # the recorded run allowed a single step
            "MIXING": {"METHOD": "BROYDEN_MIXING", "ALPHA": 0.2, "NBROYDEN": 8},
        }}}}
    }
    out = parse_cp2k_output((CASES / "unconverged" / "cp2k.out").read_text())
    assert out["version"] == "7.1" and out["scf_unconverged"] == 1 and out["ended"]


def test_scf_ladder_for_diagonalisation_and_ot(tmp_path):
    handler = Cp2kSCF()
    (tmp_path / "cp2k.out").write_text("*** WARNING in qs_scf.F:542 :: SCF run NOT converged ***")
    steps = [
        ("&MIXING\nMETHOD BROYDEN_MIXING\nALPHA 0.2\n&END MIXING",
         {"MIXING": {"ALPHA": 0.1, "NBROYDEN": 12}}),
        ("&OT\nMINIMIZER CG\nPRECONDITIONER FULL_SINGLE_INVERSE\n&END OT",
         {"OT": {"PRECONDITIONER": "FULL_ALL", "ENERGY_GAP": 0.001}}),
    ]
    for section, expected in steps:
        (tmp_path / "cp2k.inp").write_text(
            f"&FORCE_EVAL\n&DFT\n&SCF\nMAX_SCF 30\n{section}\n&END SCF\n&END DFT\n&END FORCE_EVAL"
        )
        updates = handler.correct(tmp_path, {}, water()).parameter_updates
        scf = updates["input"]["FORCE_EVAL"]["DFT"]["SCF"]
        assert scf.pop("MAX_SCF") == 100 and scf == expected
    (tmp_path / "cp2k.inp").write_text(
        "&FORCE_EVAL\n&DFT\n&SCF\n&OT\nMINIMIZER CG\nPRECONDITIONER FULL_ALL\n&END OT\n"
        "&END SCF\n&END DFT\n&END FORCE_EVAL"
    )
    with pytest.raises(NoCorrection):
        handler.correct(tmp_path, {}, water())


def test_recorded_cholesky_failure_changes_orthogonalisation(template, tmp_path):
    correction = diagnose(template, CASES / "cholesky", {}, water())
    assert correction.parameter_updates == {
        "input": {"FORCE_EVAL": {"DFT": {"SCF": {
            "CHOLESKY": "OFF", "OT": {"PRECONDITIONER": "FULL_ALL"}
        }}}}
    }
    # second failure with Cholesky already off: atomic guess and tighter integrals, then none
    case = tmp_path / "again"
    case.mkdir()
    (case / "cp2k.out").write_text((CASES / "cholesky" / "cp2k.out").read_text())
    (case / "cp2k.inp").write_text(
        (CASES / "cholesky" / "cp2k.inp").read_text().replace(
            "EPS_SCF 1e-07\n\t\t\tSCF_GUESS", "EPS_SCF 1e-07\n\t\t\tCHOLESKY OFF\n\t\t\tSCF_GUESS"
        )
    )
    second = Cp2kCholesky().correct(case, {}, water())
    dft = second.parameter_updates["input"]["FORCE_EVAL"]["DFT"]
    assert dft == {"QS": {"EPS_DEFAULT": 1e-12}, "SCF": {"SCF_GUESS": "ATOMIC"}}
    text = (case / "cp2k.inp").read_text()
    (case / "cp2k.inp").write_text(
        text.replace("EPS_DEFAULT 1e-06", "EPS_DEFAULT 1e-12")
        .replace("SCF_GUESS RESTART", "SCF_GUESS ATOMIC")
    )
    with pytest.raises(NoCorrection, match="linearly dependent"):
        Cp2kCholesky().correct(case, {}, water())


def test_recorded_out_of_memory(template):
    err = explain_failure(template, CASES / "oom", {}, water())
    assert err.kind == "resources" and err.correction.resources == {"ranks_factor": 0.5}


def test_write_input_never_mutates(template, tmp_path):
    atoms = water()
    atoms.set_initial_magnetic_moments([0.0, 1.0, 0.0])
    parameters = {**H2O, "input": {"FORCE_EVAL": {"DFT": {"SCF": {"MAX_SCF": 7}}}}}
    snapshot = {**H2O, "input": {"FORCE_EVAL": {"DFT": {"SCF": {"MAX_SCF": 7}}}}}
    before = atoms.copy()
    template.write_input(tmp_path, atoms, parameters, "relax")
    assert parameters == snapshot and atoms == before
    tree = parse_cp2k_input((tmp_path / "cp2k.inp").read_text())
    assert tree["FORCE_EVAL"]["DFT"]["SCF"]["MAX_SCF"] == "7"  # raw sections win
    assert tree["FORCE_EVAL"]["DFT"]["UKS"] == ".TRUE."  # initial moments: spin polarised
    assert tree["GLOBAL"]["RUN_TYPE"] == "GEO_OPT" and "MOTION" in tree


@programs
def test_timeout_is_a_resources_failure_and_reruns(template, profile, tmp_path):
    atoms = water()
    atoms.positions[1] += [0.0, 0.1, 0.05]
    with pytest.raises(CalculationFailed) as info:
        run_calculation(template, profile, tmp_path, atoms, H2O, "relax", timeout_s=1.5)
    err = info.value
    assert err.kind == "resources" and err.handlers == ("walltime",)
    assert err.correction.resources == {"walltime_factor": 1.5}
    assert handlers_firing(template, tmp_path) == {"walltime"}
