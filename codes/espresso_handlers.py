"""Quantum ESPRESSO ``pw.x`` recovery: the error catalogue and the after-the-run checks.

Each handler reads only the run directory (``pw.out``, ``parameters.json``) and proposes a
declarative :class:`~matdx.codes.handlers.Correction`: nested namelist updates, optionally the
structure to restart from, resource factors. The catalogue covers what aiida-quantumespresso's
``PwBaseWorkChain`` handles, with matdx's own remedies (the ladder of each is in its docstring):

=======================  =============  ===================================================
handler                  kind           pw.x says
=======================  =============  ===================================================
``diagonalization``      numerical      S matrix not positive definite, problems computing
                                        cholesky, too many bands are not converged, zhegvd /
                                        [Q, R] = qr failed, eigenvectors failed to converge,
                                        Error in routine broyden
``radial_fft``           input          Not enough space allocated for radial FFT (vc-relax
                                        volume change larger than ``cell_factor`` allows)
``symmetry``             input          not orthogonal operation; some of the original symmetry
                                        operations not satisfied
``too_few_bands``        input          too few bands, too many bands are required, cannot
                                        bracket Ef
``smearing_needed``      input          charge is wrong: smearing is needed (metal with fixed
                                        occupations)
``charge_wrong``         numerical      charge is wrong (with smearing)
``scf_unconverged``      numerical      convergence NOT achieved after N iterations
``bfgs_history``         numerical      history already reset at previous step: stopping
``ionic_unconverged``    numerical      The maximum number of steps has been reached
``walltime``             resources /    Maximum CPU time exceeded or Program stopped by user
                         infrastructure request (restart from the saved charge density and
                                        wavefunctions), timeout, killed
=======================  =============  ===================================================

Monitors (compute side, while pw.x runs; see :mod:`matdx.codes.monitors`): a stop file
``PREFIX.EXIT`` written shortly before the run's time limit, so pw.x saves its restart files
and stops by itself (then ``walltime`` continues it); :class:`ScfDiverging` kills an SCF whose
estimated accuracy keeps growing (then ``scf_unconverged`` slows the mixing); and the generic
frozen-output monitor.

After-the-run checks (``checks_finished_runs``: consulted also when pw.x finished and the result
says converged, so a run whose settings are wrong for what it found is rerun, not accepted):

``fixed_occupations_metal`` (input)
    fixed occupations, but the bands overlap: the system is a metal → cold smearing;
``highest_band_occupied`` (input)
    smearing, but the highest computed band holds electrons → more bands;
``kpoints_too_coarse_for_metal`` (input)
    a metal sampled with fewer than 2.5 k-points per Å⁻¹ (2π included, the ``fast``
    protocol) along a reciprocal vector → the grid that reaches it;
``forces_unconverged`` (numerical)
    a relaxation that ended with a force above ``forc_conv_thr`` (the final SCF of a vc-relax
    is done with the new plane-wave basis and can undo the convergence) → continue from the
    last structure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.data import covalent_radii
from ase.units import Bohr, Ry

from matdx.codes.bandgap import gap_value
from matdx.codes.base import read_parameters_record
from matdx.codes.errors import Kind, NoCorrection, SCFError
from matdx.codes.espresso import OUTPUT, PwOutput, parse_pw_output
from matdx.codes.execution import read_execution
from matdx.codes.handlers import Correction, ErrorHandler, Interrupted, OutOfMemory, read_text
from matdx.codes.monitors import Action, Monitor

__all__ = [
    "DIAGONALIZATION_LADDER",
    "METAL_KPOINT_DENSITY",
    "EspressoBFGSHistory",
    "EspressoBands",
    "EspressoChargeWrong",
    "EspressoDiagonalization",
    "EspressoFixedOccupationsMetal",
    "EspressoForcesUnconverged",
    "EspressoHighestBandOccupied",
    "EspressoInterrupted",
    "EspressoIonic",
    "EspressoMetalKpoints",
    "EspressoRadialFFT",
    "EspressoSCF",
    "EspressoSmearing",
    "EspressoSymmetry",
    "default_band_count",
    "espresso_handlers",
]

DIAGONALIZATION_LADDER = ("david", "ppcg", "paro", "cg")
"""Order in which eigensolvers are tried; cg, the slowest and most robust, is the last."""

METAL_KPOINT_DENSITY = 2.5
"""Fewest k-points per Å⁻¹ (2π included, :mod:`matdx.codes.kpoints`) along each reciprocal
vector for a metal: the density of the ``fast`` protocol, the coarsest matdx offers (a
spacing of 0.4 Å⁻¹; pymatgen's MPScanRelaxSet asks 0.22 Å⁻¹ of metals for production)."""

HIGHEST_BAND_OCCUPATION = 0.01
"""Largest occupation of the top band (pw.x prints occupations from 0 to 1) at any k-point."""


def default_band_count(n_electrons: float) -> int:
    """pw.x's own number of bands with smearing: max(1.2 N/2, N/2 + 4) for N electrons."""
    half = n_electrons / 2.0
    return max(math.ceil(1.2 * half), math.ceil(half) + 4)


def _current(parameters: Mapping[str, Any], namelist: str, key: str, default: Any) -> Any:
    value = (parameters.get(namelist) or {}).get(key)
    return default if value is None else value


def _output(directory: Path) -> PwOutput:
    return parse_pw_output(read_text(Path(directory) / OUTPUT))


def _record(directory: Path) -> dict[str, Any]:
    return read_parameters_record(Path(directory)) or {}


def _calculation(directory: Path) -> str:
    return str(_record(directory).get("calculation", "static"))


def _resolved(directory: Path, parameters: Mapping[str, Any], namelist: str, key: str) -> Any:
    """A namelist value as written (parameters.json), else as given, else None."""
    written = (_record(directory).get("parameters") or {}).get(namelist) or {}
    if key in written:
        return written[key]
    return (parameters.get(namelist) or {}).get(key)


def _last_structure(directory: Path, atoms: Atoms | None = None) -> Atoms | None:
    """The last structure ``pw.out`` printed, with the constraints of ``atoms``."""
    out = _output(directory)
    if not out.geometries:
        return None
    structure = out.geometries[-1]
    if atoms is not None:
        structure.set_constraint([c.copy() for c in atoms.constraints])
    return structure


def _relaxing(directory: Path) -> bool:
    return _calculation(directory) in {"relax", "vc-relax"}


_FROM_SCRATCH: dict[str, Any] = {"control": {"restart_mode": None}, "parent_directory": None}


class _EspressoHandler(ErrorHandler):
    """A pw.x handler whose corrections name one error of aiida-quantumespresso's catalogue
    (:attr:`error`)."""

    error: ClassVar[str] = ""

    def fix(self, *, description: str, parameter_updates: Mapping[str, Any] | None = None,
            restart_structure: Atoms | None = None) -> Correction:
        """This handler's :class:`Correction`: the remedy ``description``, the parameter
        updates and the structure to restart from, recorded with :attr:`error`."""
        return Correction(
            handler=self.name,
            description=description,
            parameter_updates=dict(parameter_updates or {}),
            restart_structure=restart_structure,
            errors=(self.error,) if self.error else (),
        )


class _PatternHandler(_EspressoHandler):
    """A handler that recognises a regular expression in ``pw.out``."""

    pattern: ClassVar[re.Pattern[str]]

    def found(self, directory: Path) -> str | None:
        """The matched message, or None."""
        match = self.pattern.search(read_text(Path(directory) / OUTPUT))
        return match.group(0) if match else None

    def detect(self, directory: Path) -> bool:
        return self.found(directory) is not None


# --------------------------------------------------------------------------- failures


class ScfDiverging(Monitor):
    """Kill a pw.x SCF whose ``estimated scf accuracy`` runs away.

    It acts when, within the current SCF cycle and after ``settle`` iterations, an estimate is
    higher than every earlier one of the cycle and ``factor`` times the lowest: the mixing is
    unstable, and pw.x would go on to ``electron_maxstep`` or die in the diagonalisation
    (``c_bands``), which then looks like a different failure. A converging SCF (noisy metals
    included) stays below its first estimates. The output is read incrementally: only what
    was appended since the last look.
    """

    name = "scf_diverging"
    _accuracy = re.compile(r"estimated scf accuracy\s*<\s*([-+0-9.EeDd]+)\s*Ry")

    def __init__(self, factor: float = 1e3, settle: int = 3) -> None:
        self.factor = float(factor)
        self.settle = int(settle)  # iterations before the first judgement
        self._offset = 0
        self._cycle: list[float] = []

    def check(self, directory: Path, elapsed_s: float) -> Action | None:
        try:
            with open(Path(directory) / OUTPUT, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except OSError:
            return None
        whole = data.rfind(b"\n") + 1
        self._offset += whole
        for line in data[:whole].decode("utf-8", "replace").splitlines():
            if re.match(r"\s*iteration #\s*1\s", line):
                self._cycle = []
            match = self._accuracy.search(line)
            if match is None:
                continue
            try:
                value = float(match.group(1).replace("D", "E").replace("d", "e"))
            except ValueError:
                continue
            earlier = self._cycle
            self._cycle = [*earlier, value]
            if (len(earlier) >= self.settle and value > max(earlier)
                    and value >= self.factor * min(earlier)):
                return Action(
                    self.name,
                    f"estimated scf accuracy {value:.3g} Ry at iteration {len(self._cycle)}: "
                    f"above every earlier estimate and {value / min(earlier):.3g} times the "
                    f"lowest ({min(earlier):.3g} Ry)",
                    stop=True,
                    elapsed_s=elapsed_s,
                )
        return None


def _stopped_by(directory: Path) -> str | None:
    record = read_execution(directory)
    return record.stopped_by if record is not None else None


class EspressoSCF(_PatternHandler):
    """``convergence NOT achieved``: the SCF loop hit ``electron_maxstep``.

    Remedies, escalating with what the parameters already say: (1) halve ``mixing_beta``
    (0.7 → 0.35) and raise ``electron_maxstep`` to at least 100 (twice the old value);
    (2) ``mixing_mode='local-TF'`` (for inhomogeneous systems: surfaces, vacancies, magnets)
    and halve the mixing again, at least 200 steps; (3) with local-TF already on, halve the
    mixing and use a longer mixing history (``mixing_ndim=12``); below β = 0.05 no remedy is
    left. A relaxation restarts from the last structure it printed.
    """

    name = "scf_unconverged"
    error = "electronic_convergence_not_reached"
    kind: ClassVar[Kind] = "numerical"
    error_class = SCFError
    default_max_corrections = 3
    pattern = re.compile(r"convergence NOT achieved after\s+(\d+)\s+iterations")

    def detect(self, directory: Path) -> bool:
        return super().detect(directory) or _stopped_by(directory) == ScfDiverging.name

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        beta = float(_current(parameters, "electrons", "mixing_beta", 0.7))
        mode = str(_current(parameters, "electrons", "mixing_mode", "plain"))
        steps = int(_current(parameters, "electrons", "electron_maxstep", 100))
        diverged = _stopped_by(directory) == ScfDiverging.name
        if diverged:  # a runaway mixing restarts from at most half the default
            beta = min(beta, 0.7)
        if mode != "local-TF" and beta >= 0.7 - 1e-9:
            updates = {"mixing_beta": round(beta / 2, 4), "electron_maxstep": max(2 * steps, 100)}
            what = f"halve mixing_beta to {updates['mixing_beta']}"
        elif mode != "local-TF":
            updates = {
                "mixing_mode": "local-TF",
                "mixing_beta": round(beta / 2, 4),
                "electron_maxstep": max(2 * steps, 200),
            }
            what = f"switch to local-TF mixing with mixing_beta {updates['mixing_beta']}"
        elif beta > 0.05:
            updates = {
                "mixing_beta": round(beta / 2, 4),
                "mixing_ndim": 12,
                "electron_maxstep": max(2 * steps, 200),
            }
            what = f"local-TF with mixing_beta {updates['mixing_beta']} and mixing_ndim 12"
        else:
            raise NoCorrection(
                f"SCF still unconverged with local-TF mixing and mixing_beta={beta}; "
                "check the structure, spin state and smearing"
            )
        structure = _last_structure(directory, atoms) if _relaxing(directory) else None
        cause = (
            "SCF diverging (stopped by the scf_diverging monitor)"
            if diverged
            else f"SCF not converged in {steps} steps"
        )
        return self.fix(
            description=f"{cause}: {what}, "
            f"electron_maxstep {updates['electron_maxstep']}"
            + (", from the last structure" if structure is not None else ""),
            parameter_updates={"electrons": updates},
            restart_structure=structure,
        )


class EspressoIonic(_PatternHandler):
    """A relaxation stopped at ``nstep`` (``The maximum number of steps has been reached``).

    Restart from the last structure printed (positions, and the cell for vc-relax) with twice
    the ionic steps.
    """

    name = "ionic_unconverged"
    error = "ionic_cycle_exceeded_nstep"
    kind: ClassVar[Kind] = "numerical"
    default_max_corrections = 3
    pattern = re.compile(r"The maximum number of steps has been reached")

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        structure = _last_structure(directory, atoms)
        if structure is None:
            raise NoCorrection("the relaxation printed no structure to restart from")
        steps = int(_current(parameters, "control", "nstep", 50))
        return self.fix(
            description=f"relaxation not converged in {steps} ionic steps: restart from the "
            f"last structure with nstep {2 * steps}",
            parameter_updates={"control": {"nstep": 2 * steps}},
            restart_structure=structure,
        )


class EspressoBFGSHistory(_PatternHandler):
    """BFGS gave up: ``history already reset at previous step: stopping``.

    pw.x 6.x then prints "bfgs converged" although the thresholds were not met; the parser
    marks the relaxation unconverged. Two causes: energies and forces too noisy for the
    thresholds, or steps smaller than ``trust_radius_min`` near a minimum. Restart from the
    last structure with, in order: (1) when ``conv_thr`` is above ``etot_conv_thr``/100 (SCF
    noise larger than the energy steps BFGS compares), ``conv_thr`` = ``etot_conv_thr``/1000;
    (2) for ``relax``, damped dynamics (``ion_dynamics='damp'``); for ``vc-relax``, start at and
    allow 10 times smaller trust radii (``trust_radius_ini`` = old ``trust_radius_min``,
    ``trust_radius_min`` / 10) while the minimum is above 1e-4 Bohr; (3) damped ionic and
    cell dynamics (``damp``, ``damp-w``).
    """

    name = "bfgs_history"
    error = "ionic_cycle_bfgs_history_failure"
    kind: ClassVar[Kind] = "numerical"
    default_max_corrections = 3
    pattern = re.compile(r"history already reset at previous step: stopping")

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        structure = _last_structure(directory, atoms)
        if structure is None:
            raise NoCorrection("the relaxation printed no structure to restart from")
        calculation = _calculation(directory)
        conv_thr = float(_current(parameters, "electrons", "conv_thr", 1e-6))
        etot = float(_current(parameters, "control", "etot_conv_thr", 1e-4))
        trust_min = float(_current(parameters, "ions", "trust_radius_min", 1e-3))
        dynamics = str(_current(parameters, "ions", "ion_dynamics", "bfgs"))
        updates: dict[str, Any]
        if conv_thr > etot / 100:
            tight = float(f"{etot / 1000:.3g}")
            updates = {"electrons": {"conv_thr": tight}}
            what = (f"SCF noise (conv_thr {conv_thr:g} Ry) above the energy steps: "
                    f"conv_thr {tight:g}")
        elif dynamics == "damp":
            raise NoCorrection("BFGS history failure with damped dynamics already in use")
        elif calculation == "vc-relax" and trust_min > 1e-4:
            smaller = float(f"{trust_min / 10:.3g}")
            updates = {"ions": {"trust_radius_ini": trust_min, "trust_radius_min": smaller}}
            what = f"trust_radius_min {smaller:g} Bohr, starting at {trust_min:g}"
        elif calculation == "vc-relax":
            updates = {"ions": {"ion_dynamics": "damp"}, "cell": {"cell_dynamics": "damp-w"}}
            what = "damped ionic and cell dynamics (damp, damp-w)"
        else:
            updates = {"ions": {"ion_dynamics": "damp"}}
            what = "damped dynamics (ion_dynamics='damp')"
        return self.fix(
            description=f"BFGS history failure: restart from the last structure with {what}",
            parameter_updates={**updates, **_FROM_SCRATCH},
            restart_structure=structure,
        )


_DIAGONALIZATION_ERRORS = {
    "s_matrix_not_positive_definite": r"S matrix not positive definite",
    "cholesky": r"problems computing cholesky|Cholesky failed in invchol",
    "too_many_bands_not_converged": r"too many bands are not converged",
    "zhegvd_failed": r"[zd]hegvd failed",
    "qr_failed": r"\[Q, R\] = qr\(X, 0\) failed",
    "eigenvectors_not_converged": r"eigenvectors failed to converge",
    "diaghg_failed": r"Error in routine [cr]diag(?:hg|h)\b",
    "broyden_factorization": r"Error in routine broyden",
}


class EspressoDiagonalization(_PatternHandler):
    """The eigensolver failed: S matrix not positive definite, Cholesky, too many bands not
    converged, zhegvd or QR failures, unconverged eigenvectors, Broyden factorisation.

    Try the next eigensolver of :data:`DIAGONALIZATION_LADDER` after the one that failed
    (david → ppcg → paro → cg); none is left after cg. When atoms overlap (closer than half the
    sum of their covalent radii) the overlap matrix is singular for any solver: no remedy, the
    structure is wrong.
    """

    name = "diagonalization"
    kind: ClassVar[Kind] = "numerical"
    default_max_corrections = 3
    pattern = re.compile("|".join(f"(?:{p})" for p in _DIAGONALIZATION_ERRORS.values()))

    def errors(self, directory: Path) -> tuple[str, ...]:
        """Names of the diagonalisation errors ``pw.out`` shows."""
        text = read_text(Path(directory) / OUTPUT)
        names = [name for name, p in _DIAGONALIZATION_ERRORS.items() if re.search(p, text)]
        if len(names) > 1 and "diaghg_failed" in names:
            names.remove("diaghg_failed")  # the routine's name; its message says more
        return tuple(names)

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        if len(atoms) > 1:
            distances = atoms.get_all_distances(mic=True)
            radii = covalent_radii[atoms.numbers]
            ratio = distances / (radii[:, None] + radii[None, :])
            np.fill_diagonal(ratio, np.inf)
            i, j = np.unravel_index(np.argmin(ratio), ratio.shape)
            if ratio[i, j] < 0.5:
                raise NoCorrection(
                    f"atoms {i} and {j} are {distances[i, j]:.3f} Å apart (less than half the "
                    "sum of their covalent radii): overlapping atoms make the overlap matrix "
                    "singular; fix the structure"
                )
        current = str(_current(parameters, "electrons", "diagonalization", "david")).lower()
        position = DIAGONALIZATION_LADDER.index(current) if current in DIAGONALIZATION_LADDER \
            else -1
        if position + 1 >= len(DIAGONALIZATION_LADDER):
            raise NoCorrection(f"diagonalization failed with diagonalization={current!r}, the "
                               "last eigensolver to try")
        new = DIAGONALIZATION_LADDER[position + 1]
        errors = self.errors(directory)
        structure = _last_structure(directory, atoms) if _relaxing(directory) else None
        return Correction(
            handler=self.name,
            description=f"{', '.join(errors) or 'diagonalisation'} with {current!r}: use "
            f"diagonalization={new!r}",
            parameter_updates={"electrons": {"diagonalization": new}},
            restart_structure=structure,
            errors=errors,
        )


class EspressoRadialFFT(_PatternHandler):
    """``Not enough space allocated for radial FFT``: a vc-relax changed the volume more than
    the interpolation tables were sized for (``cell_factor``).

    Restart from scratch at the last structure (the tables are sized for its volume) with
    twice ``cell_factor`` (pw.x's default is 2).
    """

    name = "radial_fft"
    error = "radial_fft_significant_volume_contraction"
    kind: ClassVar[Kind] = "input"
    default_max_corrections = 2
    pattern = re.compile(r"Not enough space allocated for radial FFT")

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        structure = _last_structure(directory, atoms)
        if structure is None:
            raise NoCorrection("no structure printed to restart the vc-relax from")
        factor = float(_current(parameters, "cell", "cell_factor", 2.0))
        return self.fix(
            description=f"volume changed beyond cell_factor {factor:g}: restart from the last "
            f"structure with cell_factor {2 * factor:g}",
            parameter_updates={"cell": {"cell_factor": 2 * factor}, **_FROM_SCRATCH},
            restart_structure=structure,
        )


class EspressoSymmetry(_PatternHandler):
    """Symmetry operations that no longer hold: ``not orthogonal operation`` (a cell distorted
    away from the lattice the operations were found for) or ``some of the original symmetry
    operations not satisfied`` (atoms moved off their symmetric sites).

    Turn symmetry off (``nosym``) and restart from the last structure printed.
    """

    name = "symmetry"
    error = "symmetry_operation"
    kind: ClassVar[Kind] = "input"
    default_max_corrections = 1
    pattern = re.compile(
        r"not orthogonal operation|some of the original symmetry operations not satisfied"
    )

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        if _current(parameters, "system", "nosym", False) is True:
            raise NoCorrection("symmetry error with nosym already set")
        structure = _last_structure(directory, atoms) if _relaxing(directory) else None
        return self.fix(
            description=f"{self.found(directory)}: turn symmetry off (nosym)"
            + (" and restart from the last structure" if structure is not None else ""),
            parameter_updates={"system": {"nosym": True}, **_FROM_SCRATCH},
            restart_structure=structure,
        )


def _band_count(parameters: Mapping[str, Any], directory: Path) -> tuple[float, int]:
    """(electrons, bands used) of a run, from parameters.json, pw.out or the parameters."""
    record = _record(directory).get("parameters", {})
    electrons = record.get("n_electrons")
    if electrons is None:
        electrons = _output(directory).n_electrons
    if electrons is None:
        raise NoCorrection("cannot tell the number of electrons to size nbnd")
    system = record.get("system") or parameters.get("system") or {}
    bands = system.get("nbnd")
    if bands is None:
        occupations = system.get("occupations", "fixed")
        bands = math.ceil(electrons / 2) if occupations == "fixed" else default_band_count(
            electrons
        )
    return float(electrons), int(bands)


class EspressoBands(_PatternHandler):
    """Too few Kohn–Sham states: ``too few bands``, ``too many bands are required``,
    ``cannot bracket Ef`` (the Fermi level lies above the highest computed band).

    Raise ``nbnd`` to 1.3 times the number used, and at least pw.x's default for metals,
    max(1.2 N/2, N/2 + 4) for N electrons.
    """

    name = "too_few_bands"
    error = "too_few_bands"
    kind: ClassVar[Kind] = "input"
    default_max_corrections = 2
    pattern = re.compile(r"too few bands|too many bands are required|cannot bracket Ef")

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        electrons, used = _band_count(parameters, Path(directory))
        bands = max(math.ceil(1.3 * used), default_band_count(electrons))
        return self.fix(
            description=f"too few bands ({used} for {electrons:g} electrons): nbnd {bands}",
            parameter_updates={"system": {"nbnd": bands}},
        )


_SMEARING = {"occupations": "smearing", "smearing": "mv", "degauss": 0.01}


class EspressoSmearing(_PatternHandler):
    """``charge is wrong: smearing is needed``: fixed occupations on a metal.

    Use Marzari–Vanderbilt cold smearing, ``degauss`` 0.01 Ry (0.136 eV), the usual choice for
    metals: it keeps the free energy close to the zero-smearing energy; the band count then
    follows pw.x's default for smearing.
    """

    name = "smearing_needed"
    error = "charge_is_wrong_smearing_needed"
    kind: ClassVar[Kind] = "input"
    default_max_corrections = 1
    pattern = re.compile(r"smearing is needed")

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        return self.fix(
            description="fixed occupations on a metal (charge is wrong): Marzari-Vanderbilt "
            "smearing with degauss 0.01 Ry",
            parameter_updates={"system": dict(_SMEARING)},
        )


class EspressoChargeWrong(_PatternHandler):
    """``charge is wrong`` with smearing on: the integrated density differs from the number of
    electrons, usually augmentation charges (ultrasoft/PAW) resolved on too coarse a density
    grid.

    Raise ``ecutrho`` to 1.5 times the value written (at least 8 × ``ecutwfc``); a relaxation
    restarts from its last structure.
    """

    name = "charge_wrong"
    error = "charge_is_wrong"
    kind: ClassVar[Kind] = "numerical"
    default_max_corrections = 2
    pattern = re.compile(r"charge is wrong(?!: smearing is needed)")

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        ecutwfc = _resolved(directory, parameters, "system", "ecutwfc")
        if ecutwfc is None:
            raise NoCorrection("cannot tell ecutwfc to raise ecutrho")
        ecutrho = _resolved(directory, parameters, "system", "ecutrho") or 4 * float(ecutwfc)
        new = max(1.5 * float(ecutrho), 8 * float(ecutwfc))
        structure = _last_structure(directory, atoms) if _relaxing(directory) else None
        return self.fix(
            description=f"integrated charge is wrong with ecutrho {float(ecutrho):g} Ry: "
            f"ecutrho {new:g} Ry",
            parameter_updates={"system": {"ecutrho": new}, **_FROM_SCRATCH},
            restart_structure=structure,
        )


class EspressoInterrupted(Interrupted):
    """Timeout, walltime or killed process, including pw.x's own ``max_seconds`` stop.

    After pw.x's own clean stop (``Maximum CPU time exceeded``: the charge density and
    wavefunctions are saved, also in the middle of an SCF) the next attempt continues where it
    stopped: ``restart_mode='restart'`` with the old run as ``parent_directory`` and 1.5 times
    ``max_seconds`` (matching the 1.5 times walltime asked for). After a kill the saved files
    may be torn: relaxations restart from scratch at the last structure printed and single
    points rerun from scratch.
    """

    def __init__(self, max_corrections: int | None = None) -> None:
        super().__init__(
            files=(OUTPUT,),
            markers=re.compile(r"Maximum CPU time exceeded|Program stopped by user request"),
            max_corrections=max_corrections,
        )

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        directory = Path(directory)
        text = read_text(directory / OUTPUT)
        calculation = _calculation(directory)
        if "Maximum CPU time exceeded" in text or "Program stopped by user request" in text:
            control: dict[str, Any] = {"restart_mode": "restart"}
            seconds = _current(parameters, "control", "max_seconds", None)
            if seconds is not None:
                control["max_seconds"] = round(1.5 * float(seconds), 3)
            return self.base_correction(
                directory,
                "continue with restart_mode='restart' from this run's restart files"
                + (f", max_seconds {control['max_seconds']}" if seconds is not None else ""),
                parameter_updates={
                    "control": control,
                    "parent_directory": str(directory.resolve()),
                },
                errors=("out_of_walltime",),
            )
        updates = {"control": {"restart_mode": None}, "parent_directory": None}
        if calculation in {"relax", "vc-relax"}:
            structure = _last_structure(directory, atoms)
            if structure is not None:
                return self.base_correction(
                    directory,
                    "restart the relaxation from the last structure",
                    parameter_updates=updates,
                    restart_structure=structure,
                )
        if calculation in {"nscf", "bands"}:
            updates.pop("parent_directory")
        return self.base_correction(directory, "rerun from scratch", parameter_updates=updates)


# --------------------------------------------------------------------------- after-the-run checks


def _finished(directory: Path) -> PwOutput | None:
    """The parsed output of a run that ended normally (``JOB DONE``, no error box)."""
    out = _output(directory)
    return out if out.job_done and out.error is None and not out.cpu_time_exceeded else None


def _overlap(out: PwOutput, occupied: int) -> float | None:
    """Lowest empty minus highest filled band energy (eV) over all k-points, for ``occupied``
    filled bands per spin channel; negative when the bands overlap (a metal)."""
    if out.eigenvalues is None or out.eigenvalues.shape[-1] <= occupied or occupied < 1:
        return None
    values = np.asarray(out.eigenvalues)
    return float(values[..., occupied].min() - values[..., occupied - 1].max())


class EspressoFixedOccupationsMetal(_EspressoHandler):
    """A finished run with fixed occupations whose bands overlap: the lowest empty band lies
    below the highest filled one somewhere in the Brillouin zone, so the system is a metal and
    filling the lowest N/2 bands at each k-point is wrong (pw.x only stops on its own when N
    is odd).

    Cold smearing as for ``smearing_needed``.
    """

    name = "fixed_occupations_metal"
    error = "metal_with_fixed_occupations"
    kind: ClassVar[Kind] = "input"
    default_max_corrections = 1
    checks_finished_runs = True

    def detect(self, directory: Path) -> bool:
        out = _finished(directory)
        if out is None or out.n_electrons is None:
            return False
        system = (_record(directory).get("parameters") or {}).get("system") or {}
        if system.get("occupations", "fixed") != "fixed" or system.get("nspin", 1) != 1:
            return False
        if _calculation(directory) in {"nscf", "bands"}:
            return False
        overlap = _overlap(out, round(out.n_electrons / 2))
        return overlap is not None and overlap < 0.0

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        out = _output(directory)
        overlap = _overlap(out, round((out.n_electrons or 0) / 2))
        return self.fix(
            description=f"fixed occupations but the bands overlap by {-(overlap or 0):.3f} eV "
            "(a metal): Marzari-Vanderbilt smearing with degauss 0.01 Ry",
            parameter_updates={"system": {**_SMEARING, "nbnd": None}},
        )


class EspressoHighestBandOccupied(_EspressoHandler):
    """A finished run with smearing whose highest computed band holds electrons (occupation
    above :data:`HIGHEST_BAND_OCCUPATION` at some k-point): states that should be filled are
    missing, so the density and the Fermi level are wrong.

    Raise ``nbnd`` by a quarter, at least 4 bands.
    """

    name = "highest_band_occupied"
    error = "insufficient_bands"
    kind: ClassVar[Kind] = "input"
    default_max_corrections = 2
    checks_finished_runs = True

    def detect(self, directory: Path) -> bool:
        out = _finished(directory)
        if out is None or out.occupations is None:
            return False
        system = (_record(directory).get("parameters") or {}).get("system") or {}
        if system.get("occupations", "fixed") == "fixed":
            return False
        occupations = np.asarray(out.occupations)
        return bool(occupations[..., -1].max() > HIGHEST_BAND_OCCUPATION)

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        out = _output(directory)
        if out.occupations is None:
            raise NoCorrection("pw.out printed no occupations")
        used = int(np.asarray(out.occupations).shape[-1])
        bands = used + max(math.ceil(0.25 * used), 4)
        return self.fix(
            description=f"the highest of {used} bands is occupied "
            f"({float(np.asarray(out.occupations)[..., -1].max()):.3f}): nbnd {bands}",
            parameter_updates={"system": {"nbnd": bands}},
        )


def _kpoint_shortfall(directory: Path, atoms: Atoms | None) -> tuple[list[int], list[int]] | None:
    """(grid used, grid needed for :data:`METAL_KPOINT_DENSITY`) when the grid is too coarse."""
    kpoints = (_record(directory).get("parameters") or {}).get("kpoints") or {}
    out = _output(directory)
    structure = atoms if atoms is not None else (out.geometries[-1] if out.geometries else None)
    if structure is None:
        return None
    if kpoints.get("gamma"):
        grid = [1, 1, 1]
    elif "grid" in kpoints:
        grid = [int(n) for n in kpoints["grid"]]
    else:
        return None
    lengths = np.linalg.norm(structure.cell.reciprocal() * 2 * np.pi, axis=1)
    needed = [max(1, math.ceil(length * METAL_KPOINT_DENSITY - 1e-9)) if periodic else 1
              for length, periodic in zip(lengths, structure.pbc, strict=True)]
    if all(n >= m for n, m in zip(grid, needed, strict=True)):
        return None
    return grid, [max(n, m) for n, m in zip(grid, needed, strict=True)]


def _is_metal(out: PwOutput) -> bool:
    if out.eigenvalues is None or out.fermi_energy is None:
        return False
    gap = gap_value(np.asarray(out.eigenvalues), out.fermi_energy, out.occupations)
    return gap is not None and gap == 0.0


class EspressoMetalKpoints(_EspressoHandler):
    """A finished run that found a metal (a band crosses the Fermi level) on a k-point grid
    coarser than :data:`METAL_KPOINT_DENSITY`: the Fermi surface is sampled too coarsely for
    energies, forces and stresses to be converged.

    Use the Monkhorst–Pack grid that reaches the spacing (the old grid where it was finer).
    """

    name = "kpoints_too_coarse_for_metal"
    error = "kpoints_too_coarse_for_metal"
    kind: ClassVar[Kind] = "input"
    default_max_corrections = 1
    checks_finished_runs = True

    def detect(self, directory: Path) -> bool:
        out = _finished(directory)
        if out is None or _calculation(directory) in {"nscf", "bands"} or not _is_metal(out):
            return False
        return _kpoint_shortfall(directory, None) is not None

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        shortfall = _kpoint_shortfall(directory, atoms)
        if shortfall is None:
            raise NoCorrection("the k-point grid already reaches the metallic spacing")
        grid, needed = shortfall
        return self.fix(
            description=f"a metal on a {'x'.join(map(str, grid))} k-point grid: use "
            f"{'x'.join(map(str, needed))} ({METAL_KPOINT_DENSITY:g} points per Å⁻¹)",
            parameter_updates={"kpoints": {"grid": needed}},
        )


class EspressoForcesUnconverged(_EspressoHandler):
    """A relaxation pw.x declared converged whose last forces exceed ``forc_conv_thr``
    (Ry/Bohr, pw.x default 1e-3): e.g. the final SCF of a vc-relax, done with the plane waves
    of the new cell, moved the minimum.

    Continue from the last structure (a fresh BFGS with the new basis).
    """

    name = "forces_unconverged"
    error = "forces_not_converged"
    kind: ClassVar[Kind] = "numerical"
    default_max_corrections = 2
    checks_finished_runs = True

    def _excess(self, directory: Path) -> tuple[float, float] | None:
        """(largest force, threshold) in eV/Å when the force is above the threshold."""
        out = _finished(directory)
        if out is None or not _relaxing(directory) or not out.steps:
            return None
        if not out.ionic_converged or out.max_steps_reached or out.bfgs_history_failed:
            return None  # an unconverged relaxation is the failure handlers' business
        forces = out.steps[-1].forces
        if forces is None or len(forces) == 0:
            return None
        control = (_record(directory).get("parameters") or {}).get("control") or {}
        threshold = float(control.get("forc_conv_thr", 1e-3))
        largest = float(np.abs(forces).max())
        if largest <= threshold:
            return None
        return largest * Ry / Bohr, threshold * Ry / Bohr

    def detect(self, directory: Path) -> bool:
        return self._excess(directory) is not None

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        excess = self._excess(directory)
        structure = _last_structure(directory, atoms)
        if excess is None or structure is None:
            raise NoCorrection("no force above the threshold or no structure to continue from")
        largest, threshold = excess
        return self.fix(
            description=f"relaxation ended with a force component of {largest:.4f} eV/Å "
            f"(threshold {threshold:.4f}): continue from the last structure",
            parameter_updates=dict(_FROM_SCRATCH),
            restart_structure=structure,
        )


def espresso_handlers() -> tuple[ErrorHandler, ...]:
    """The pw.x handlers in the order they are consulted: the most specific failure first,
    the after-the-run checks last."""
    return (
        OutOfMemory((OUTPUT, "pw.err")),
        EspressoDiagonalization(),
        EspressoRadialFFT(),
        EspressoSymmetry(),
        EspressoBands(),
        EspressoSmearing(),
        EspressoChargeWrong(),
        EspressoSCF(),
        EspressoBFGSHistory(),
        EspressoIonic(),
        EspressoInterrupted(),
        EspressoFixedOccupationsMetal(),
        EspressoHighestBandOccupied(),
        EspressoMetalKpoints(),
        EspressoForcesUnconverged(),
    )
