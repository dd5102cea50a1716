"""VASP: inputs from pymatgen's Materials Project sets, outputs and expert error handlers.

VASP is licensed and cannot be installed here: inputs are written with ``potcar_spec=True``
(``POTCAR.spec`` lists the POTCAR symbols; no POTCAR is ever written, read or hashed), outputs
are parsed with :mod:`pymatgen.io.vasp` from ``vasprun.xml`` (``OUTCAR``/``OSZICAR`` for
magnetisation, wall time and electronic steps), and the handlers are tested on recorded outputs.

Calculations and input sets: ``static`` → ``MPStaticSet``, ``relax`` → ``MPRelaxSet`` with
``ISIF=2`` (positions only), ``vc-relax`` → ``MPRelaxSet`` (``ISIF=3``), ``nscf`` →
``MPNonSCFSet(mode="uniform")``, ``bands`` → ``MPNonSCFSet(mode="line")``.

Parameters (a dict, never modified)::

    {
        "incar": {"ALGO": "Normal", "NGX": None},  # overrides; None removes a key
        "kpoints": {"density": 5.0}                 # points per Å⁻¹ (2π included), Γ-centred
                 | {"reciprocal_density": 64}       # pymatgen's per-Å⁻³ density
                 | {"grid": [4, 4, 4]}              # Γ-centred grid
                 | {"line_density": 20}             # bands
                 | {"file": "<KPOINTS text>"},      # a complete KPOINTS (from a correction)
        "potcar": {"Fe": "Fe_pv"},                  # POTCAR symbol overrides
        "potcar_functional": "PBE_54",              # default: the set's
        "parent_directory": "/runs/static-1",       # nscf/bands: CHGCAR (and WAVECAR) from there
    }

The atom order of the input structure is kept (``sort_structure=False``), so forces and
moments line up with the input atoms. Stress is converted from kBar with the sign flipped to
ASE's convention (VASP prints positive stress under compression). The energy is the free
energy ``e_fr_energy`` (TOTEN) of the last ionic step, the quantity whose derivatives are the
forces. A missing or truncated ``vasprun.xml`` raises :class:`~matdx.codes.errors.ReadError`.
"""

from __future__ import annotations

import bz2
import functools
import json
import re
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar
from xml.etree.ElementTree import ParseError

import numpy as np
from ase import Atoms
from ase.units import GPa
from pymatgen.core import Structure
from pymatgen.electronic_structure.core import Spin
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.vasp.inputs import POTCAR_STATS_PATH, Incar, Kpoints, Poscar
from pymatgen.io.vasp.outputs import Outcar, Vasprun
from pymatgen.io.vasp.sets import MPNonSCFSet, MPRelaxSet, MPStaticSet

from matdx.codes.bandgap import gap_value
from matdx.codes.base import (
    Template,
    read_parameters_record,
    refusing_unsafe_values,
    write_parameters_record,
)
from matdx.codes.custodian_handlers import (
    CustodianHandler,
    CustodianValidator,
    Diagnosis,
    Translation,
)
from matdx.codes.errors import InputError, Kind, NoCorrection, ReadError, SCFError
from matdx.codes.execution import Profile, read_execution
from matdx.codes.handlers import (
    Correction,
    ErrorHandler,
    Interrupted,
    OutOfMemory,
    read_text,
)
from matdx.codes.inputs import InputGenerator
from matdx.codes.kpoints import kpoint_grid
from matdx.codes.monitors import FrozenOutput, Monitor, StopFileBeforeLimit, clean_stop_margin
from matdx.codes.registry import CodeInfo
from matdx.codes.results import CalculationResult
from matdx.codes.trajectory import Frames
from matdx.safety.text import check_keys, check_tree, check_word

__all__ = [
    "ERROR_KINDS",
    "STOPCAR",
    "IonicStepTimes",
    "VaspInterrupted",
    "VaspMaxForce",
    "VaspTemplate",
    "custodian_handlers",
    "custodian_validators",
    "finished_outcar",
    "frozen_job_handler",
    "read_incar",
    "read_oszicar",
    "stopped_on_request",
]

STDOUT, STDERR = "vasp.out", "std_err.txt"
STOPCAR = "STOPCAR"
"""VASP reads ``STOPCAR`` at each ionic step: ``LSTOP = .TRUE.`` ends the run after the current
ionic step, with CONTCAR and WAVECAR written."""
_IONIC_STEP_TIME = re.compile(rb"LOOP\+:.*real time\s*([0-9.]+)")
_LOGS = (STDOUT, STDERR, "OUTCAR")
_SETS = {
    "static": (MPStaticSet, {}),
    "relax": (MPRelaxSet, {"ISIF": 2}),
    "vc-relax": (MPRelaxSet, {}),
    "nscf": (MPNonSCFSet, {}),
    "bands": (MPNonSCFSet, {}),
}
# INCAR tags are upper-case words; values may not hold ";" (a second tag on the same line)
# or a comment character.
INCAR_TAG = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
INCAR_TAG_RULE = "an INCAR tag (letters, digits and _)"
_KEYS = frozenset({"incar", "kpoints", "potcar", "potcar_functional", "parent_directory"})
_RELAX_IBRION = {1, 2, 3}


# --------------------------------------------------------------------------- helpers


def _kpoints_file(text: Any) -> Kpoints:
    """A KPOINTS given as its complete text (a correction's), parsed so that only a valid
    KPOINTS is ever written back.

    Raises
    ------
    InputError
        When the text is not a KPOINTS file pymatgen can read.
    """
    if not isinstance(text, str):
        raise InputError(f"kpoints.file: expected the text of a KPOINTS file, got {text!r}")
    try:
        return Kpoints.from_str(text)
    except (ValueError, IndexError) as err:
        raise InputError(f"kpoints.file: not a KPOINTS file ({err})") from err


def read_incar(directory: Path) -> dict[str, Any]:
    """The INCAR of a run directory as a dict (empty if missing)."""
    path = Path(directory) / "INCAR"
    if not path.is_file():
        return {}
    return dict(Incar.from_file(path))


def read_oszicar(directory: Path) -> list[tuple[float, int]]:
    """(free energy F in eV, electronic steps) per completed ionic step of ``OSZICAR``."""
    steps: list[tuple[float, int]] = []
    count = 0
    for line in read_text(Path(directory) / "OSZICAR").splitlines():
        if re.match(r"\s*[A-Z]{2,4}\s*:\s+\d+\s", line):
            count += 1
        elif m := re.match(r"\s*\d+\s+F=\s*(\S+)", line):
            steps.append((float(m.group(1)), count))
            count = 0
    return steps


@functools.lru_cache(maxsize=1)
def _zval_table() -> dict[str, dict[str, float]]:
    """Functional → POTCAR symbol → valence electrons, from pymatgen's POTCAR statistics."""
    with bz2.open(POTCAR_STATS_PATH, "rt") as handle:
        stats = json.load(handle)
    table: dict[str, dict[str, float]] = {}
    for functional, entries in stats.items():
        for variants in entries.values():
            for item in variants:
                table.setdefault(functional, {}).setdefault(item["symbol"], float(item["ZVAL"]))
    return table


def _atoms(structure: Structure) -> Atoms:
    """A plain :class:`ase.Atoms` (no calculator, no pymatgen subclass) of a structure."""
    return Atoms(
        numbers=list(structure.atomic_numbers),
        positions=structure.cart_coords,
        cell=structure.lattice.matrix,
        pbc=True,
    )


def _is_relaxation(incar: Mapping[str, Any]) -> bool:
    return int(incar.get("NSW", 0) or 0) > 0 and int(incar.get("IBRION", -1)) in _RELAX_IBRION


def _load_vasprun(directory: Path) -> Vasprun:
    path = Path(directory) / "vasprun.xml"
    if not path.is_file():
        raise ReadError(directory, "vasprun.xml is missing", path=path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Vasprun(str(path), parse_potcar_file=False)
    except (ParseError, SyntaxError, ValueError, KeyError, IndexError, AttributeError) as err:
        raise ReadError(
            directory, f"vasprun.xml is truncated or malformed ({err})", path=path
        ) from err


def _complete_vasprun(directory: Path) -> Vasprun | None:
    try:
        return _load_vasprun(directory)
    except ReadError:
        return None


# --------------------------------------------------------------------------- template


class IonicStepTimes:
    """The longest ionic step of a running VASP so far, in seconds (``LOOP+`` real times in
    OUTCAR), read incrementally: each call reads only what OUTCAR gained since the last one.
    A new (shorter) OUTCAR starts over; 0.0 before the first ionic step ends."""

    def __init__(self) -> None:
        self._offset = 0
        self._rest = b""
        self._longest = 0.0

    def __call__(self, directory: Path) -> float:
        path = Path(directory) / "OUTCAR"
        try:
            size = path.stat().st_size
            if size < self._offset:
                self._offset, self._rest, self._longest = 0, b"", 0.0
            with path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except OSError:
            return self._longest
        self._offset += len(chunk)
        lines = (self._rest + chunk).split(b"\n")
        self._rest = lines.pop()  # an unfinished last line is read again next time
        for line in lines:
            if (match := _IONIC_STEP_TIME.search(line)) is not None:
                self._longest = max(self._longest, float(match.group(1)))
        return self._longest


class VaspTemplate(Template):
    """VASP (``vasp_std``) through pymatgen's Materials Project input sets.

    Files: ``INCAR``, ``KPOINTS``, ``POSCAR``, ``POTCAR.spec`` (never a POTCAR),
    ``vasp.out``/``std_err.txt`` (stdout/stderr), ``parameters.json``.
    """

    name = "vasp"
    calculations: ClassVar[frozenset[str]] = frozenset(_SETS)
    stdout = STDOUT
    stderr = STDERR
    default_binary: ClassVar[tuple[str, ...]] = ("vasp_std",)
    install_hint = "VASP is licensed software: install it from your VASP license"

    def default_handlers(self) -> tuple[ErrorHandler, ...]:
        """Out of memory first (fewer ranks), then custodian's handlers (detection and
        corrections), then matdx's after-the-run force check and the walltime restart."""
        return (
            OutOfMemory(_LOGS),
            *custodian_handlers(),
            VaspMaxForce(),
            frozen_job_handler(),
            VaspInterrupted(),
            *custodian_validators(),
        )

    def clean_stop(self, directory: Path, timeout_s: float) -> Monitor | None:
        """Custodian's walltime rule, with a time limit of 10 s or more: a ``STOPCAR`` with
        ``LSTOP = .TRUE.`` once the time left is below the larger of 10 % of the limit (3 s to
        10 min) and three times the longest ionic step so far (``LOOP+`` in OUTCAR). VASP then
        ends after its current ionic step and :class:`VaspInterrupted` continues from CONTCAR
        and WAVECAR. (The frozen-output monitor of every template watches ``vasp.out`` for
        6 h, as custodian's ``FrozenJobErrorHandler``.)"""
        if timeout_s < 10.0:
            return None
        return StopFileBeforeLimit(timeout_s, clean_stop_margin(timeout_s), STOPCAR,
                                   "LSTOP = .TRUE.\n", step_s=IonicStepTimes())

    def write_input(
        self,
        directory: Path,
        atoms: Atoms,
        parameters: Mapping[str, Any],
        calculation: str,
        *,
        profile: Profile | None = None,
    ) -> None:
        """Write INCAR, KPOINTS, POSCAR and POTCAR.spec with the MP input set.

        Raises
        ------
        InputError
            Unknown keys, bad k-points, nscf/bands without a parent holding a CHGCAR.
        """
        self.check_calculation(calculation)
        directory = Path(directory)
        unknown = sorted(set(parameters) - _KEYS)
        if unknown:
            raise InputError(f"parameters: unknown keys {unknown}; accepted: {sorted(_KEYS)}")
        with refusing_unsafe_values():
            checked = {k: v for k, v in parameters.items() if k != "kpoints"}
            check_tree(checked, "parameters")  # kpoints.file is parsed by _kpoints_file
            check_keys(dict(parameters.get("incar") or {}), "parameters.incar", INCAR_TAG,
                       INCAR_TAG_RULE, forbidden=";#!")
            for element, symbol in dict(parameters.get("potcar") or {}).items():
                check_word(symbol, f"parameters.potcar.{element}")
            kpoints_text = {k: v for k, v in dict(parameters.get("kpoints") or {}).items()
                            if k != "file"}
            check_tree(kpoints_text, "parameters.kpoints")
        if len(atoms) == 0:
            raise InputError("atoms: empty structure")
        structure: Structure = AseAtomsAdaptor.get_structure(atoms)
        moments = atoms.get_initial_magnetic_moments()
        if np.any(moments != 0):
            structure.add_site_property("magmom", [float(m) for m in moments])
        cls, set_incar = _SETS[calculation]
        incar = {**set_incar, **dict(parameters.get("incar") or {})}
        kwargs: dict[str, Any] = {
            "user_incar_settings": incar,
            "user_potcar_settings": dict(parameters.get("potcar") or {}) or None,
            "sort_structure": False,
        }
        if parameters.get("potcar_functional"):
            kwargs["user_potcar_functional"] = parameters["potcar_functional"]
        kpoints = {k: v for k, v in dict(parameters.get("kpoints") or {}).items()
                   if v is not None}
        if calculation == "nscf":
            kwargs["mode"] = "uniform"
        if calculation == "bands":
            kwargs["mode"] = "line"
            if "line_density" in kpoints:
                kwargs["kpoints_line_density"] = int(kpoints.pop("line_density"))
        if "file" in kpoints:
            kwargs["user_kpoints_settings"] = _kpoints_file(kpoints.pop("file"))
        elif "density" in kpoints:
            grid = kpoint_grid(atoms.cell, float(kpoints.pop("density")), atoms.pbc)
            kwargs["user_kpoints_settings"] = Kpoints.gamma_automatic(grid)
        elif "grid" in kpoints:
            kwargs["user_kpoints_settings"] = Kpoints.gamma_automatic(
                tuple(int(n) for n in kpoints.pop("grid"))
            )
        elif "reciprocal_density" in kpoints:
            value = int(kpoints.pop("reciprocal_density"))
            if calculation in {"nscf", "bands"}:
                kwargs["reciprocal_density"] = value
            else:
                kwargs["user_kpoints_settings"] = {"reciprocal_density": value}
        if kpoints:
            raise InputError(
                f"kpoints: unexpected {sorted(kpoints)}; accepted: density, grid, "
                "reciprocal_density, file, line_density (bands)"
            )
        parent = parameters.get("parent_directory")
        has_charge = bool(parent) and (Path(str(parent)) / "CHGCAR").is_file()
        if calculation in {"nscf", "bands"} and not has_charge:
            raise InputError(
                f"calculation={calculation!r} needs parameters['parent_directory'] with the "
                "CHGCAR of a converged static run"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            input_set = cls(structure, **kwargs)
            input_set.write_input(str(directory), potcar_spec=True)
        if parent:
            for name in ("CHGCAR", "WAVECAR"):
                source = Path(parent) / name
                if source.is_file() and not (directory / name).exists():
                    shutil.copyfile(source, directory / name)
        written = dict(Incar.from_file(directory / "INCAR"))
        record = {
            "input_set": cls.__name__,
            "incar": written,
            "kpoints": (directory / "KPOINTS").read_text(),
            "potcar_symbols": (directory / "POTCAR.spec").read_text().split(),
            "potcar_functional": input_set.potcar_functional,
        }
        if parent:
            record["parent_directory"] = str(parent)
        write_parameters_record(directory, self.name, calculation, record)

    def read_results(self, directory: Path) -> CalculationResult:
        """Parse ``vasprun.xml`` (and ``OUTCAR`` for moments and wall time).

        Raises
        ------
        ReadError
            ``vasprun.xml`` missing, truncated or malformed.
        """
        directory = Path(directory)
        run = _load_vasprun(directory)
        record = read_parameters_record(directory)
        incar = dict(run.incar)
        if record is not None:
            calculation, parameters = record["calculation"], record["parameters"]
        else:
            calculation = _infer_calculation(directory, incar)
            parameters = {"incar": read_incar(directory) or incar}
        relaxing = _is_relaxation(incar)
        last = run.ionic_steps[-1]
        structure = _atoms(run.final_structure)
        forces = np.asarray(last["forces"], dtype=float) if "forces" in last else None
        stress = None
        if last.get("stress") is not None:
            stress = -0.1 * GPa * np.asarray(last["stress"], dtype=float)
        eigenvalues = occupations = kpoints = kweights = None
        if run.eigenvalues:
            spins = [s for s in (Spin.up, Spin.down) if s in run.eigenvalues]
            data = np.array([run.eigenvalues[s] for s in spins], dtype=float)
            eigenvalues, occupations = data[..., 0], data[..., 1]
            kpoints = np.asarray(run.actual_kpoints, dtype=float)
            weights = np.asarray(run.actual_kpoints_weights, dtype=float)
            kweights = weights / weights.sum()
        moments = total = walltime = None
        if (directory / "OUTCAR").is_file():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outcar = Outcar(str(directory / "OUTCAR"))
            if outcar.magnetization:
                moments = np.array([site["tot"] for site in outcar.magnetization], dtype=float)
            total = outcar.total_mag
            walltime = outcar.run_stats.get("Elapsed time (sec)")
        pseudos = []
        for spec in run.potcar_spec or []:
            titel = spec.get("titel", "")
            symbol = titel.split()[1] if len(titel.split()) > 1 else titel
            pseudos.append({"element": symbol.split("_")[0], "name": titel, "sha256": None})
        frames = _frames(run) if relaxing else None
        ionic = bool(run.converged_ionic) if relaxing else None
        scf = bool(run.converged_electronic)
        return CalculationResult(
            code=self.name,
            code_version=run.vasp_version,
            calculation=calculation,
            structure=structure,
            converged=scf and ionic is not False,
            scf_converged=scf,
            ionic_converged=ionic,
            energy=float(last["e_fr_energy"]),
            forces=forces,
            stress=stress,
            fermi_level=None if run.efermi is None else float(run.efermi),
            band_gap=(
                None if eigenvalues is None else gap_value(eigenvalues, run.efermi, occupations)
            ),
            eigenvalues=eigenvalues,
            occupations=occupations,
            kpoints=kpoints,
            kweights=kweights,
            magnetic_moments=moments,
            total_magnetization=None if total is None else float(total),
            n_scf_steps=sum(len(step["electronic_steps"]) for step in run.ionic_steps),
            n_ionic_steps=len(run.ionic_steps),
            walltime_s=None if walltime is None else float(walltime),
            pseudopotentials=pseudos,
            parameters=parameters,
            warnings=[],
            frames=frames,
        )


def _infer_calculation(directory: Path, incar: Mapping[str, Any]) -> str:
    if _is_relaxation(incar):
        return "vc-relax" if int(incar.get("ISIF", 2)) >= 3 else "relax"
    if int(incar.get("ICHARG", 0) or 0) >= 10:
        kpoints = read_text(Path(directory) / "KPOINTS").lower()
        return "bands" if "line" in kpoints else "nscf"
    return "static"


def _frames(run: Vasprun) -> Frames:
    steps = run.ionic_steps
    return Frames(
        positions=np.array([s["structure"].cart_coords for s in steps]),
        cells=np.array([s["structure"].lattice.matrix for s in steps]),
        times=np.arange(len(steps), dtype=float),
        steps=np.arange(len(steps), dtype=np.int64),
        velocities=None,
        forces=np.array([s["forces"] for s in steps], dtype=float),
        observables={"potential_energy": np.array([s["e_fr_energy"] for s in steps])},
    )


# --------------------------------------------------------------------------- handlers


# Failure kind of each error custodian's VaspErrorHandler and StdErrHandler name; the others
# (diagonalisation, mixing, minimiser failures) are numerical.
_INPUT_ERRORS = (
    "algo_tet", "auto_nbands", "bravais", "coef", "dentet", "dfpt_ncore", "elf_kpar", "elf_ncl",
    "hnform", "ibzkpt", "incorrect_shift", "inv_rot_mat", "kpoints_trans", "ksymm",
    "nbands_not_sufficient", "point_group", "posmap", "pricel", "pricelv", "read_error",
    "real_optlay", "rhosyg", "rot_matrix", "rspher", "set_core_wf", "symprec_noise", "tet",
    "tetirr", "too_few_bands", "triple_product",
)
ERROR_KINDS: dict[str, Kind] = {
    **dict.fromkeys(_INPUT_ERRORS, "input"),
    "out_of_memory": "resources",
}


def translate_custodian(directory: Path, corrected: Path, diagnosis: Diagnosis) -> Translation:
    """matdx parameter updates that reproduce the inputs custodian rewrote in ``corrected``.

    INCAR: every tag custodian set or changed becomes ``incar`` updates (``None`` for a tag it
    removed); KPOINTS: a changed file becomes ``kpoints.file`` (the complete text, replacing
    the density or grid); POSCAR: a changed structure (custodian copies CONTCAR to POSCAR to
    continue a relaxation) becomes the restart structure. File actions that only delete
    outputs (WAVECAR, CHGCAR) need no change: the next attempt starts in a new directory.
    """
    updates: dict[str, Any] = {}
    if (corrected / "INCAR").is_file():
        before = dict(read_incar(directory))
        after = dict(Incar.from_file(corrected / "INCAR"))
        incar = {k: v for k, v in after.items() if before.get(k) != v}
        incar.update({k: None for k in before if k not in after})
        if incar:
            updates["incar"] = incar
    old, new = directory / "KPOINTS", corrected / "KPOINTS"
    if new.is_file() and (not old.is_file() or old.read_text() != new.read_text()):
        kpoints: dict[str, Any] = dict.fromkeys(("density", "grid", "reciprocal_density"))
        kpoints["file"] = str(Kpoints.from_file(new))
        updates["kpoints"] = kpoints
    elif old.is_file() and not new.is_file():  # custodian switched to KSPACING
        updates["kpoints"] = None
    structure = None
    old, new = directory / "POSCAR", corrected / "POSCAR"
    if new.is_file() and (not old.is_file() or old.read_text() != new.read_text()):
        structure = _atoms(Poscar.from_file(new).structure)
    notes = tuple(
        f"{a['file']}: {a.get('action')} (nothing to carry over to a new directory)"
        for a in diagnosis.actions if "file" in a and a.get("file") not in {"CONTCAR", "POSCAR"}
    )
    return Translation(updates, structure, notes)


def stopped_on_request(directory: Path) -> bool:
    """Whether the run directory holds a ``STOPCAR`` asking VASP to stop (``LSTOP`` or
    ``LABORT``): written by the walltime monitor or by hand, it leaves an unconverged ionic
    loop that is no convergence failure."""
    text = read_text(Path(directory) / STOPCAR).upper()
    return re.search(r"L(STOP|ABORT)\s*=\s*\.?T", text) is not None


def _not_stopped_on_request(directory: Path) -> bool:
    return not stopped_on_request(directory)


def _stopped_as_frozen(directory: Path) -> bool:
    record = read_execution(Path(directory))
    return record is not None and record.stopped_by == FrozenOutput.name


def frozen_job_handler() -> CustodianHandler:
    """Custodian's ``FrozenJobErrorHandler`` after the frozen-output monitor killed a run (its
    own check, output older than its timeout, is the monitor's): ALGO Fast becomes Normal,
    else a relaxation continues from CONTCAR."""
    from custodian.vasp import handlers as cv

    return CustodianHandler(
        lambda: cv.FrozenJobErrorHandler(STDOUT, timeout=0), "custodian.FrozenJobErrorHandler",
        "program", translate_custodian, when=_stopped_as_frozen,
    )


def custodian_handlers() -> tuple[CustodianHandler, ...]:
    """Custodian's VASP handlers, in the order custodian's VASP workflows run them."""
    from custodian.vasp import handlers as cv

    def wrap(make: Any, name: str, kind: Kind, **kwargs: Any) -> CustodianHandler:
        return CustodianHandler(make, f"custodian.{name}", kind, translate_custodian, **kwargs)

    return (
        wrap(lambda: cv.VaspErrorHandler(STDOUT), "VaspErrorHandler", "numerical",
             error_kinds=ERROR_KINDS),
        wrap(lambda: cv.StdErrHandler(STDERR), "StdErrHandler", "program",
             error_kinds=ERROR_KINDS),
        wrap(lambda: cv.MeshSymmetryErrorHandler(STDOUT), "MeshSymmetryErrorHandler", "input"),
        wrap(cv.UnconvergedErrorHandler, "UnconvergedErrorHandler", "numerical",
             error_class=SCFError, when=_not_stopped_on_request),
        wrap(cv.NonConvergingErrorHandler, "NonConvergingErrorHandler", "numerical",
             error_class=SCFError, when=_not_stopped_on_request),
        wrap(cv.PotimErrorHandler, "PotimErrorHandler", "numerical"),
        wrap(cv.PositiveEnergyErrorHandler, "PositiveEnergyErrorHandler", "numerical"),
        # after-the-run checks judge a finished run, not one stopped at a STOPCAR's request
        wrap(cv.IncorrectSmearingHandler, "IncorrectSmearingHandler", "input",
             checks_finished_runs=True, when=_not_stopped_on_request),
        wrap(cv.KspacingMetalHandler, "KspacingMetalHandler", "input",
             checks_finished_runs=True, when=_not_stopped_on_request),
        wrap(cv.LargeSigmaHandler, "LargeSigmaHandler", "input", checks_finished_runs=True,
             when=_not_stopped_on_request),
    )


def finished_outcar(directory: Path) -> bool:
    """Whether VASP wrote its closing timing summary into ``OUTCAR``."""
    return "General timing and accounting" in read_text(Path(directory) / "OUTCAR")


def custodian_validators() -> tuple[CustodianValidator, ...]:
    """Custodian's VASP validators: after-the-run checks that a finished run's outputs are
    whole (a torn ``vasprun.xml`` or missing ``CONTCAR``/``OSZICAR`` is refused)."""
    from custodian.vasp import validators as cv

    def wrap(make: Any, name: str, kind: Kind, *requires: str) -> CustodianValidator:
        return CustodianValidator(make, f"custodian.{name}", kind, finished_outcar, requires)

    return (
        wrap(cv.VaspFilesValidator, "VaspFilesValidator", "infrastructure"),
        wrap(lambda: cv.VasprunXMLValidator(STDOUT, STDERR), "VasprunXMLValidator",
             "infrastructure"),
        wrap(cv.VaspNpTMDValidator, "VaspNpTMDValidator", "program", "INCAR"),
        wrap(cv.VaspAECCARValidator, "VaspAECCARValidator", "numerical", "AECCAR0", "AECCAR2"),
    )


def _max_force(run: Vasprun) -> float:
    forces = np.asarray(run.ionic_steps[-1]["forces"], dtype=float)
    fixed = run.final_structure.site_properties.get("selective_dynamics")
    if fixed is not None:
        forces = forces * np.asarray(fixed, dtype=float)
    return float(np.linalg.norm(forces, axis=1).max())


class VaspMaxForce(ErrorHandler):
    """A relaxation ended as converged but the residual forces are large: the energy
    criterion (``EDIFFG > 0``) was met before the forces were small.

    A force above ``max_force`` (eV/Å) with ``EDIFFG ≥ 0``, or above 1.5 |EDIFFG| with a force
    criterion, means the structure is not relaxed. Continue from the last structure (CONTCAR)
    with a force criterion ``EDIFFG = -0.05`` eV/Å.

    Parameters
    ----------
    max_force
        eV/Å threshold for energy-criterion relaxations (default 0.25).
    """

    name = "max_force"
    kind: ClassVar[Kind] = "numerical"
    default_max_corrections = 3
    checks_finished_runs = True

    def __init__(self, max_force: float = 0.25, max_corrections: int | None = None) -> None:
        super().__init__(max_corrections)
        self.max_force = float(max_force)

    def _threshold(self, run: Vasprun) -> float:
        ediffg = float(run.parameters.get("EDIFFG", 0.0))
        return 1.5 * abs(ediffg) if ediffg < 0 else self.max_force

    def detect(self, directory: Path) -> bool:
        run = _complete_vasprun(Path(directory))
        if run is None or not _is_relaxation(run.parameters) or not run.converged_ionic:
            return False
        return _max_force(run) > self._threshold(run)

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        run = _complete_vasprun(Path(directory))
        if run is None:
            raise NoCorrection("vasprun.xml is unreadable")
        ediffg = float(run.parameters.get("EDIFFG", 0.0))
        updates = {"EDIFFG": -0.05} if ediffg >= 0 else {}
        structure = _atoms(run.final_structure)
        return Correction(
            handler=self.name,
            description=f"relaxation stopped with a residual force of {_max_force(run):.3f} "
            f"eV/Å (EDIFFG = {ediffg}): continue from CONTCAR"
            + (" with EDIFFG = -0.05 (force criterion)" if updates else ""),
            parameter_updates={"incar": updates} if updates else {},
            restart_structure=structure,
        )


def _contcar(directory: Path) -> Atoms | None:
    path = Path(directory) / "CONTCAR"
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        return _atoms(Poscar.from_file(path).structure)
    except (ValueError, IndexError):
        return None


class VaspInterrupted(Interrupted):
    """Timeout, walltime or killed process.

    After VASP stopped at a ``STOPCAR``'s request (the walltime monitor's, as custodian's
    ``WalltimeHandler``) its CONTCAR and WAVECAR are complete: the next attempt continues from
    them (``parent_directory`` copies WAVECAR and CHGCAR; a relaxation starts from CONTCAR),
    with 1.5 times the walltime. After a kill, relaxations continue from CONTCAR and other
    runs rerun unchanged (with 1.5 times the walltime after a time limit).
    """

    def cause(self, directory: Path) -> tuple[str, bool] | None:
        if stopped_on_request(Path(directory)):
            record = read_execution(Path(directory))
            if record is None or (record.stopped_by is None and not record.timed_out):
                return "VASP stopped after its ionic step at the STOPCAR's request", True
        return super().cause(directory)

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        directory = Path(directory)
        structure = _contcar(directory)
        relaxing = structure is not None and _is_relaxation(read_incar(directory))
        if stopped_on_request(directory) and (directory / "WAVECAR").is_file():
            return self.base_correction(
                directory,
                "continue from WAVECAR" + (" and CONTCAR" if relaxing else ""),
                parameter_updates={"parent_directory": str(directory.resolve())},
                restart_structure=structure if relaxing else None,
            )
        if relaxing:
            return self.base_correction(
                directory, "continue from CONTCAR", restart_structure=structure
            )
        return self.base_correction(directory, "rerun unchanged")


# ---------------------------------------------------------------------------------------------
# Input generator and registry entry (issue 11, "one home per program"): the protocols of a
# run and what the code registry knows of VASP.
# ---------------------------------------------------------------------------------------------

class VaspInputs(InputGenerator):
    """VASP protocols on top of the Materials Project input sets (MPRelaxSet, MPStaticSet,
    ...): ``kpoints.reciprocal_density`` in points per Å⁻³ of reciprocal volume, INCAR tags
    over the set's."""

    code: ClassVar[str] = "vasp"
    levels: ClassVar[dict[str, Any]] = {
        "moderate": {"parameters": {"kpoints": {"reciprocal_density": 100}}},
        "fast": {"PARENT": "moderate", "parameters": {
            "kpoints": {"reciprocal_density": 50}, "incar": {"EDIFF": 1.0e-4}}},
        "precise": {"PARENT": "moderate", "parameters": {
            "kpoints": {"reciprocal_density": 200}, "incar": {"EDIFF": 1.0e-7, "ENCUT": 700}}},
    }

    def grid_from(self, kpoints: dict[str, Any], reference: Atoms) -> tuple[int, ...] | None:
        """The grid pymatgen's input sets choose for ``reciprocal_density``."""
        if "reciprocal_density" not in kpoints:
            return None
        structure = AseAtomsAdaptor.get_structure(reference)
        density = int(kpoints.pop("reciprocal_density"))
        return tuple(Kpoints.automatic_density_by_vol(structure, density).kpts[0])

    def band_path(self, npoints: int) -> dict[str, Any]:
        """pymatgen's line-mode path with about ``npoints`` points in all."""
        return {"line_density": max(10, npoints // 4)}


CODE = CodeInfo(
    "vasp", frozenset({"static", "relax", "eos", "elastic", "bands"}), program="vasp_std",
    install_hint="VASP is licensed; install it on the site", template=VaspTemplate,
    inputs=VaspInputs(),
)
__all__ += ["CODE", "VaspInputs"]
