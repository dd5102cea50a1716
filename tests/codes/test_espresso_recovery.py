"""Quantum ESPRESSO recovery on real failing pw.x runs: each is diagnosed and corrected so the
next attempt succeeds, as the workflow engine's retry loop does it.

The runs use the real ``pw.x`` 6.7 from Debian with 1–2 atom cells, low cutoffs and few
k-points on one rank. The catalogue entries that a tiny cell cannot produce (Cholesky, zhegvd,
charge is wrong with smearing, symmetry) are checked on pw.x's own error messages, quoted from
the Quantum ESPRESSO 6.7 sources named beside each, with their corrections.
(Also real runs, in ``test_espresso.py``: SCF out of steps, ``nstep`` reached, too few bands,
odd-electron metal with fixed occupations, S matrix of overlapping atoms, kills.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from matdx.codes.base import diagnose, read_parameters_record, run_calculation
from matdx.codes.errors import CalculationFailed, NoCorrection
from matdx.codes.espresso import EspressoTemplate, parse_pw_output
from matdx.codes.espresso_handlers import (
    EspressoBFGSHistory,
    EspressoChargeWrong,
    EspressoDiagonalization,
    EspressoSymmetry,
)
from matdx.codes.handlers import Correction
from tests.codes.helpers import PW_AL_SMEARING as AL_SMEARING
from tests.codes.helpers import PW_SI as SI
from tests.codes.helpers import handlers_firing, profile_for, pw_template

pytestmark = [pytest.mark.programs, pytest.mark.slow]



@pytest.fixture(scope="module")
def template() -> EspressoTemplate:
    return pw_template()


@pytest.fixture(scope="module")
def profile(template):
    return profile_for(template)


def fail_then_correct(template, profile, root: Path, atoms: Atoms, parameters: dict,
                      calculation: str, handler: str):
    """Run once, expect ``handler`` to diagnose the failure; run the corrected inputs."""
    with pytest.raises(CalculationFailed) as info:
        run_calculation(template, profile, root / "1", atoms, parameters, calculation)
    failure = info.value
    assert failure.handlers[0] == handler, failure.reason
    correction = failure.correction
    assert isinstance(correction, Correction) and correction.handler == handler
    assert diagnose(template, root / "1", parameters, atoms) == correction
    atoms = correction.restart_structure if correction.restart_structure is not None else atoms
    fixed = correction.apply(parameters)
    result = run_calculation(template, profile, root / "2", atoms, fixed, calculation,
                             applied={handler: 1})
    assert result.converged
    return failure, fixed, result


# --------------------------------------------------------------------------- real failures


def test_vc_relax_bfgs_history_failure_is_rerun_with_a_tighter_scf(template, profile,
                                                                   tmp_path):
    """SCF noise (conv_thr 1e-4 Ry) larger than the energy steps (1e-8 Ry) BFGS compares:
    pw.x resets the history twice, stops and prints "bfgs converged" anyway."""
    parameters = {**SI, "electrons": {"conv_thr": 1e-4},
                  "control": {"etot_conv_thr": 1e-8, "forc_conv_thr": 1e-7},
                  "cell": {"press_conv_thr": 0.01}}
    failure, fixed, result = fail_then_correct(
        template, profile, tmp_path, bulk("Si", "diamond", a=5.6), parameters, "vc-relax",
        "bfgs_history")
    text = (tmp_path / "1" / "pw.out").read_text()
    assert "history already reset at previous step: stopping" in text
    assert "bfgs converged" in text  # pw.x's claim, which matdx does not accept
    assert failure.kind == "numerical"
    assert failure.correction.errors == ("ionic_cycle_bfgs_history_failure",)
    assert fixed["electrons"]["conv_thr"] == pytest.approx(1e-11)
    last = parse_pw_output(text).geometries[-1]
    assert np.allclose(failure.correction.restart_structure.cell, last.cell)
    assert result.ionic_converged


def test_radial_fft_after_a_large_volume_change_restarts_with_a_larger_cell_factor(
        template, profile, tmp_path):
    parameters = {**SI, "cell": {"cell_factor": 1.0}}
    failure, fixed, result = fail_then_correct(
        template, profile, tmp_path, bulk("Si", "diamond", a=6.2), parameters, "vc-relax",
        "radial_fft")
    assert "Not enough space allocated for radial FFT" in (tmp_path / "1" / "pw.out").read_text()
    assert failure.kind == "input"
    assert fixed["cell"]["cell_factor"] == 2.0
    assert failure.correction.restart_structure.get_volume() < bulk("Si", "diamond",
                                                                    a=6.2).get_volume()
    assert result.ionic_converged and result.structure.get_volume() == pytest.approx(
        bulk("Si", "diamond", a=5.47).get_volume(), rel=0.05)


def test_walltime_hit_mid_scf_restarts_from_the_saved_density(template, profile, tmp_path):
    """pw.x's own stop (``max_seconds``) inside the SCF loop saves the density and the
    wavefunctions; the next attempt continues the SCF from them (restart_mode='restart')."""
    slow = {**SI, "electrons": {"conv_thr": 1e-13, "mixing_beta": 0.02, "electron_maxstep": 400}}
    reference = run_calculation(template, profile, tmp_path / "reference", bulk("Si", "diamond",
                                a=5.43), slow, "static")
    with pytest.raises(CalculationFailed) as info:
        run_calculation(template, profile, tmp_path / "1", bulk("Si", "diamond", a=5.43),
                        {**slow, "control": {"max_seconds": 2.0}}, "static")
    failure = info.value
    text = (tmp_path / "1" / "pw.out").read_text()
    done = text.count("iteration #")
    assert "Maximum CPU time exceeded" in text and 1 <= done < reference.n_scf_steps
    assert failure.kind == "resources" and failure.handlers == ("walltime",)
    assert failure.correction.errors == ("out_of_walltime",)
    assert (tmp_path / "1" / "out" / "pwscf.save" / "charge-density.dat").is_file()
    resumed = failure.correction.apply({**slow, "control": {"max_seconds": 2.0}})
    assert resumed["control"]["restart_mode"] == "restart"
    resumed["control"]["max_seconds"] = 3600  # the next allocation has the time it needs
    result = run_calculation(template, profile, tmp_path / "2", bulk("Si", "diamond", a=5.43),
                             resumed, "static")
    assert result.converged
    assert result.energy == pytest.approx(reference.energy, abs=1e-6)
    assert "restart" in (tmp_path / "2" / "pw.in").read_text()


# --------------------------------------------------------------------------- after-the-run checks


def test_finished_metal_with_fixed_occupations_is_rerun_with_smearing(template, profile,
                                                                      tmp_path):
    """Two Al atoms: 6 electrons, so pw.x fills three bands per k-point and finishes; the
    bands overlap, so matdx does not accept the result."""
    aluminium = bulk("Al", "fcc", a=4.05).repeat((2, 1, 1))
    parameters = {"system": {"ecutwfc": 15.0}, "kpoints": {"density": 3.0}}
    failure, fixed, result = fail_then_correct(
        template, profile, tmp_path, aluminium, parameters, "static", "fixed_occupations_metal")
    assert "JOB DONE" in (tmp_path / "1" / "pw.out").read_text()
    assert failure.kind == "input"
    assert fixed["system"]["occupations"] == "smearing" and fixed["system"]["nbnd"] is None
    assert result.band_gap == 0.0


def test_finished_run_with_the_highest_band_occupied_gets_more_bands(template, profile,
                                                                     tmp_path):
    parameters = {**AL_SMEARING, "system": {**AL_SMEARING["system"], "nbnd": 2}}
    failure, _, result = fail_then_correct(
        template, profile, tmp_path, bulk("Al", "fcc", a=4.05), parameters, "static",
        "highest_band_occupied")
    assert failure.correction.parameter_updates == {"system": {"nbnd": 6}}
    assert np.asarray(result.occupations)[..., -1].max() < 0.01


def test_finished_metal_on_a_coarse_kmesh_is_rerun_on_a_finer_one(template, profile, tmp_path):
    parameters = {**AL_SMEARING, "kpoints": {"density": 1.0}}
    failure, _, result = fail_then_correct(
        template, profile, tmp_path, bulk("Al", "fcc", a=4.05), parameters, "static",
        "kpoints_too_coarse_for_metal")
    assert failure.correction.parameter_updates == {"kpoints": {"grid": [7, 7, 7]}}
    written = read_parameters_record(tmp_path / "2")["parameters"]["kpoints"]
    assert written["grid"] == [7, 7, 7] and result.band_gap == 0.0
    # an insulator on the same coarse mesh is accepted
    run_calculation(template, profile, tmp_path / "si", bulk("Si", "diamond", a=5.43),
                    {**SI, "kpoints": {"density": 1.0}}, "static")
    assert handlers_firing(template, tmp_path / "si") == set()


# --------------------------------------------------------------------------- pw.x's messages


def _pw_out(directory: Path, routine: str, message: str) -> Path:
    """A pw.out ending in pw.x's error box (the layout of ``errore`` in QE 6.7)."""
    directory.mkdir()
    bar = " " + "%" * 78
    (directory / "pw.out").write_text(
        f"     Program PWSCF v.6.7MaX starts on  7Dec2026\n\n{bar}\n"
        f"     Error in routine {routine} (1):\n     {message}\n{bar}\n\n"
        "     stopping ...\n"
    )
    return directory


@pytest.mark.parametrize(
    ("routine", "message", "error"),
    [
        # LAXlib/cdiaghg.f90, rdiaghg.f90
        ("cdiaghg", "S matrix not positive definite", "s_matrix_not_positive_definite"),
        ("cdiaghg", "problems computing cholesky", "cholesky"),
        # PW/src/c_bands.f90
        ("c_bands", "too many bands are not converged", "too_many_bands_not_converged"),
        # LAXlib/cdiaghg.f90 (the divide-and-conquer path)
        ("cdiaghg", "zhegvd failed", "zhegvd_failed"),
        # KS_Solvers/ParO/paro_gamma.f90
        ("paro_gamma", "[Q, R] = qr(X, 0) failed", "qr_failed"),
        # LAXlib/cdiaghg.f90
        ("cdiaghg", "eigenvectors failed to converge", "eigenvectors_not_converged"),
        # PW/src/mix_rho.f90
        ("broyden", "factorization", "broyden_factorization"),
    ],
)
def test_every_diagonalisation_message_climbs_the_eigensolver_ladder(template, tmp_path,
                                                                     routine, message, error):
    directory = _pw_out(tmp_path / "run", routine, message)
    assert handlers_firing(template, directory) == {"diagonalization"}
    si = bulk("Si", "diamond", a=5.43)
    handler = EspressoDiagonalization()
    steps = []
    current: dict = {}
    while True:
        try:
            correction = handler.correct(directory, current, si)
        except NoCorrection:
            break
        assert error in correction.errors
        current = correction.apply(current)
        steps.append(current["electrons"]["diagonalization"])
    assert steps == ["ppcg", "paro", "cg"]


def test_charge_is_wrong_with_smearing_raises_ecutrho(template, tmp_path):
    directory = _pw_out(tmp_path / "run", "electrons", "charge is wrong")  # PW/src/electrons.f90
    assert handlers_firing(template, directory) == {"charge_wrong"}
    correction = EspressoChargeWrong().correct(
        directory, {"system": {"ecutwfc": 25.0, "ecutrho": 200.0}}, bulk("Si"))
    assert correction.parameter_updates["system"] == {"ecutrho": 300.0}
    smearing = _pw_out(tmp_path / "fixed", "electrons", "charge is wrong: smearing is needed")
    assert handlers_firing(template, smearing) == {"smearing_needed"}


@pytest.mark.parametrize("message", ["not orthogonal operation",  # PW/src/symme.f90 checkallsym
                                     "some of the original symmetry operations not satisfied"])
def test_symmetry_errors_turn_symmetry_off(template, tmp_path, message):
    directory = _pw_out(tmp_path / "run", "checkallsym", message)
    assert handlers_firing(template, directory) == {"symmetry"}
    correction = EspressoSymmetry().correct(directory, {}, bulk("Si"))
    assert correction.parameter_updates["system"] == {"nosym": True}
    with pytest.raises(NoCorrection):
        EspressoSymmetry().correct(directory, {"system": {"nosym": True}}, bulk("Si"))


def test_bfgs_history_ladder_for_relax_and_vc_relax(tmp_path):
    """After the SCF noise is ruled out: damped dynamics for relax; smaller trust radii, then
    damped ionic and cell dynamics for vc-relax (no pw.out: the ladder reads the parameters)."""
    handler = EspressoBFGSHistory()
    si = bulk("Si", "diamond", a=5.43)
    for calculation, expected in [
        ("relax", [{"ions": {"ion_dynamics": "damp"}}]),
        ("vc-relax", [{"ions": {"trust_radius_ini": 1e-3, "trust_radius_min": 1e-4}},
                      {"ions": {"ion_dynamics": "damp"}, "cell": {"cell_dynamics": "damp-w"}}]),
    ]:
        directory = tmp_path / calculation
        directory.mkdir()
        (directory / "parameters.json").write_text(json.dumps(
            {"code": "espresso", "calculation": calculation, "parameters": {}}))
        (directory / "pw.out").write_text(
            "CELL_PARAMETERS (angstrom)\n0.0 2.715 2.715\n2.715 0.0 2.715\n2.715 2.715 0.0\n"
            "ATOMIC_POSITIONS (angstrom)\nSi 0.0 0.0 0.0\nSi 1.3575 1.3575 1.3575\n")
        parameters: dict = {}
        seen = []
        while True:
            try:
                correction = handler.correct(directory, parameters, si)
            except NoCorrection:
                break
            updates = {k: v for k, v in correction.parameter_updates.items()
                       if k in {"ions", "cell"}}
            seen.append(updates)
            parameters = correction.apply(parameters)
        assert seen == expected


def test_a_converged_relaxation_with_forces_above_the_threshold_is_continued(template,
                                                                              tmp_path):
    """The closing lines of a real vc-relax (pw.x 6.7, Si, final SCF after "bfgs converged"),
    with the final SCF's forces made larger than ``forc_conv_thr``, as a change of basis can
    leave them: the run is not accepted and continues from its last structure."""
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / "parameters.json").write_text(json.dumps(
        {"code": "espresso", "calculation": "vc-relax",
         "parameters": {"control": {"forc_conv_thr": 1e-4}}}))
    closing = """     Program PWSCF v.6.7MaX starts on  7Dec2026
     bfgs converged in   8 scf cycles and   7 bfgs steps
CELL_PARAMETERS (angstrom)
   0.001141879   2.729455659   2.729455659
   2.729455659   0.001141879   2.729455659
   2.729455659   2.729455659   0.001141879

ATOMIC_POSITIONS (angstrom)
Si            0.0652077110        0.0652077110        0.0652077110
Si            1.4298068550        1.4298068550        1.4298068550
End final coordinates
     Final scf calculation at the relaxed structure.
     Self-consistent Calculation
     convergence has been achieved in  11 iterations
!    total energy              =     -15.68271000 Ry

     Forces acting on atoms (cartesian axes, Ry/au):

     atom    1 type  1   force =    -0.00%s   -0.00%s   -0.00%s
     atom    2 type  1   force =     0.00%s    0.00%s    0.00%s

   JOB DONE.
"""
    (directory / "pw.out").write_text(closing.replace("%s", "008206"))
    assert "forces_unconverged" not in handlers_firing(template, directory)
    (directory / "pw.out").write_text(closing.replace("%s", "208206"))
    assert handlers_firing(template, directory) == {"forces_unconverged"}
    correction = diagnose(template, directory, {}, bulk("Si", "diamond", a=5.43))
    assert correction.handler == "forces_unconverged"
    assert correction.restart_structure.positions[1] == pytest.approx([1.4298068550] * 3)
