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
                 | {"line_density": 20},            # bands
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
import math
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

from matdx.codes.base import Template, read_parameters_record, write_parameters_record
from matdx.codes.errors import InputError, Kind, NoCorrection, ReadError, SCFError
from matdx.codes.execution import Profile
from matdx.codes.handlers import (
    Correction,
    ErrorHandler,
    Interrupted,
    OutOfMemory,
    read_text,
    search,
)
from matdx.codes.kpoints import kpoint_grid
from matdx.codes.results import CalculationResult, band_gap
from matdx.codes.trajectory import Frames

__all__ = [
    "VaspAliasing",
    "VaspInterrupted",
    "VaspIonic",
    "VaspLreal",
    "VaspMaxForce",
    "VaspPositiveEnergy",
    "VaspSCF",
    "VaspTemplate",
    "VaspTooFewBands",
    "read_incar",
    "read_oszicar",
]

STDOUT, STDERR = "vasp.out", "std_err.txt"
_LOGS = (STDOUT, STDERR, "OUTCAR")
_SETS = {
    "static": (MPStaticSet, {}),
    "relax": (MPRelaxSet, {"ISIF": 2}),
    "vc-relax": (MPRelaxSet, {}),
    "nscf": (MPNonSCFSet, {}),
    "bands": (MPNonSCFSet, {}),
}
_KEYS = frozenset({"incar", "kpoints", "potcar", "potcar_functional", "parent_directory"})
_RELAX_IBRION = {1, 2, 3}


# --------------------------------------------------------------------------- helpers


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
        return (
            OutOfMemory(_LOGS),
            VaspLreal(),
            VaspAliasing(),
            VaspTooFewBands(),
            VaspPositiveEnergy(),
            VaspSCF(),
            VaspMaxForce(),
            VaspIonic(),
            VaspInterrupted(),
        )

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
        kpoints = dict(parameters.get("kpoints") or {})
        if calculation == "nscf":
            kwargs["mode"] = "uniform"
        if calculation == "bands":
            kwargs["mode"] = "line"
            if "line_density" in kpoints:
                kwargs["kpoints_line_density"] = int(kpoints.pop("line_density"))
        if "density" in kpoints:
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
                "reciprocal_density, line_density (bands)"
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
                None if eigenvalues is None else band_gap(eigenvalues, run.efermi, occupations)
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


def _algo(incar: Mapping[str, Any]) -> str:
    return str(incar.get("ALGO", "Normal")).strip().lower()


class VaspSCF(ErrorHandler):
    """The last ionic step used all ``NELM`` electronic steps (``OSZICAR``), or vasprun.xml
    says the electronic loop did not converge.

    Remedies by the current INCAR: RMM-DIIS (``ALGO = Fast/VeryFast``) → ``Normal``
    (blocked Davidson, more robust); ``Normal`` → ``All`` (all bands together, conjugate
    gradient); ``All`` → gentler charge mixing ``AMIX = 0.1, BMIX = 0.01`` (and
    ``AMIX_MAG = 0.4, BMIX_MAG = 0.0001`` when spin polarised). ``NELM`` below 100 is raised to
    100 with any of them.
    """

    name = "scf_unconverged"
    kind: ClassVar[Kind] = "numerical"
    error_class = SCFError
    default_max_corrections = 3

    def detect(self, directory: Path) -> bool:
        directory = Path(directory)
        steps = read_oszicar(directory)
        if steps:
            nelm = int(read_incar(directory).get("NELM", 60))
            return steps[-1][1] >= nelm
        run = _complete_vasprun(directory)
        return run is not None and not run.converged_electronic

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        incar = read_incar(Path(directory))
        algo = _algo(incar)
        nelm = int(incar.get("NELM", 60))
        if algo in {"fast", "veryfast", "very_fast"}:
            updates: dict[str, Any] = {"ALGO": "Normal"}
        elif algo == "normal":
            updates = {"ALGO": "All"}
        elif float(incar.get("AMIX", 0.4)) > 0.1:
            updates = {"AMIX": 0.1, "BMIX": 0.01}
            if int(incar.get("ISPIN", 1)) == 2:
                updates |= {"AMIX_MAG": 0.4, "BMIX_MAG": 0.0001}
        else:
            raise NoCorrection(
                f"SCF unconverged with ALGO={incar.get('ALGO')} and AMIX={incar.get('AMIX')}"
            )
        if nelm < 100:
            updates["NELM"] = 100
        changes = ", ".join(f"{k} = {v}" for k, v in updates.items())
        return Correction(
            handler=self.name,
            description=f"electronic steps hit NELM = {nelm} "
            f"(ALGO = {incar.get('ALGO', 'Normal')}): {changes}",
            parameter_updates={"incar": updates},
        )


class VaspPositiveEnergy(ErrorHandler):
    """Positive total energy (``F=`` in ``OSZICAR``): the electronic minimiser diverged.

    RMM-DIIS (``ALGO = Fast/VeryFast``) is the usual culprit: use ``Normal``; after that
    ``All``.
    """

    name = "positive_energy"
    kind: ClassVar[Kind] = "numerical"
    default_max_corrections = 2

    def detect(self, directory: Path) -> bool:
        steps = read_oszicar(Path(directory))
        return bool(steps) and steps[-1][0] > 0

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        incar = read_incar(Path(directory))
        algo = _algo(incar)
        if algo in {"fast", "veryfast", "very_fast"}:
            new = "Normal"
        elif algo == "normal":
            new = "All"
        else:
            raise NoCorrection(
                f"positive energy with ALGO={incar.get('ALGO')}: check the structure"
            )
        energy = read_oszicar(Path(directory))[-1][0]
        return Correction(
            handler=self.name,
            description=f"positive total energy F = {energy:.4g} eV with ALGO = "
            f"{incar.get('ALGO', 'Normal')}: ALGO = {new}",
            parameter_updates={"incar": {"ALGO": new}},
        )


class VaspTooFewBands(ErrorHandler):
    """``TOO FEW BANDS``: the highest band is occupied.

    ``NBANDS`` becomes 1.2 times the number used. That number is read from ``INCAR``,
    ``OUTCAR`` (``NBANDS=``) or ``vasprun.xml``; failing those it is estimated like VASP's
    default, max((N+2)/2 + max(NIONS/2, 3), 0.6 N) (×1.2 with ``ISPIN = 2``), with the valence
    electrons N of the POTCARs in ``POTCAR.spec`` (or the Materials Project choice per element)
    from pymatgen's POTCAR statistics: no POTCAR file is needed.
    """

    name = "too_few_bands"
    kind: ClassVar[Kind] = "input"
    default_max_corrections = 3
    _pattern = re.compile(r"TOO FEW BANDS")

    def detect(self, directory: Path) -> bool:
        return search(directory, _LOGS, self._pattern) is not None

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        directory = Path(directory)
        incar = read_incar(directory)
        used, source = incar.get("NBANDS"), "INCAR"
        if used is None:
            m = re.search(r"NBANDS\s*=\s*(\d+)", read_text(directory / "OUTCAR"))
            used, source = (int(m.group(1)), "OUTCAR") if m else (None, "")
        if used is None and (run := _complete_vasprun(directory)) is not None:
            used, source = run.parameters.get("NBANDS"), "vasprun.xml"
        if used is None:
            used, source = self._estimate(directory, incar, atoms), "estimated VASP default"
        bands = math.ceil(1.2 * int(used))
        return Correction(
            handler=self.name,
            description=f"too few bands: NBANDS {used} ({source}) → {bands}",
            parameter_updates={"incar": {"NBANDS": bands}},
        )

    @staticmethod
    def _estimate(directory: Path, incar: Mapping[str, Any], atoms: Atoms) -> int:
        spec = read_text(directory / "POTCAR.spec").split()
        symbols = atoms.get_chemical_symbols()
        elements = list(dict.fromkeys(symbols))
        functional = MPRelaxSet.CONFIG["POTCAR_FUNCTIONAL"]
        table = _zval_table().get(functional, {})
        chosen = {s.split("_")[0]: s for s in spec} if spec else {}
        electrons = 0.0
        for element in elements:
            symbol = chosen.get(element) or MPRelaxSet.CONFIG["POTCAR"].get(element, element)
            if symbol not in table:
                raise NoCorrection(f"no valence count for POTCAR {symbol!r} to size NBANDS")
            electrons += table[symbol] * symbols.count(element)
        ions = len(atoms)
        bands = max(
            math.ceil((electrons + 2) / 2) + max(ions // 2, 3), math.ceil(0.6 * electrons)
        )
        if int(incar.get("ISPIN", 1)) == 2:
            bands = math.ceil(1.2 * bands)
        return bands


class VaspAliasing(ErrorHandler):
    """FFT grid too coarse: ``aliasing errors must be expected`` or ``Your FFT grids
    (NGX,NGY,NGZ) are not sufficient``.

    Use the grid VASP recommends when it prints one (``good settings for NGX NGY and NGZ``, or
    ``set NGX to N`` in OUTCAR); otherwise remove user-set ``NGX/NGY/NGZ`` so VASP picks grids
    from ``ENCUT`` and ``PREC``; otherwise ``PREC = Accurate``.
    """

    name = "aliasing"
    kind: ClassVar[Kind] = "input"
    default_max_corrections = 2
    _pattern = re.compile(
        r"aliasing( \(wrap around\))? errors must be expected|FFT grids \(NGX,NGY,NGZ\) are not"
    )
    _good = re.compile(
        r"good settings for NGX NGY and\s+NGZ are\W*(\d+)\s+(\d+)\s+and\s+(\d+)", re.DOTALL
    )

    def detect(self, directory: Path) -> bool:
        return search(directory, _LOGS, self._pattern) is not None

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        directory = Path(directory)
        incar = read_incar(directory)
        text = "\n".join(read_text(directory / name) for name in _LOGS)
        axes = ("NGX", "NGY", "NGZ")
        if m := self._good.search(text):
            updates: dict[str, Any] = dict(zip(axes, map(int, m.groups()), strict=True))
            what = "use the grid VASP recommends"
        elif per_axis := re.findall(r"set (NG[XYZ]) to\s*(\d+)", text):
            updates = {axis: int(value) for axis, value in per_axis}
            what = "use the grid VASP recommends"
        elif set_by_user := [axis for axis in axes if axis in incar]:
            updates = dict.fromkeys(set_by_user)
            what = f"remove the too small {'/'.join(set_by_user)} (VASP picks the grid)"
        elif str(incar.get("PREC", "Normal")).lower() != "accurate":
            updates = {"PREC": "Accurate"}
            what = "PREC = Accurate for finer grids"
        else:
            raise NoCorrection("aliasing with automatic grids and PREC = Accurate: raise ENCUT")
        return Correction(
            handler=self.name,
            description=f"FFT grid aliasing: {what} ({updates})",
            parameter_updates={"incar": updates},
        )


class VaspLreal(ErrorHandler):
    """Real-space projection failed: ``REAL_OPTLAY: internal error``, ``REAL_OPT``/``RSPHER``
    internal errors (large cells with ``LREAL = .TRUE./Auto``).

    Project in reciprocal space: ``LREAL = .FALSE.`` (exact; slower in large cells).
    """

    name = "lreal"
    kind: ClassVar[Kind] = "input"
    default_max_corrections = 1
    _pattern = re.compile(
        r"REAL_OPTLAY: internal error|REAL_OPT: internal ERROR|RSPHER: internal ERROR"
    )

    def detect(self, directory: Path) -> bool:
        return search(directory, _LOGS, self._pattern) is not None

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        incar = read_incar(Path(directory))
        lreal = incar.get("LREAL", False)
        if lreal is False or str(lreal).strip(".").lower() in {"false", "f"}:
            raise NoCorrection("real-space projection error although LREAL = .FALSE.")
        return Correction(
            handler=self.name,
            description=f"real-space projector error with LREAL = {lreal} in a cell of "
            f"{len(atoms)} atoms: LREAL = .FALSE.",
            parameter_updates={"incar": {"LREAL": False}},
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


class VaspIonic(ErrorHandler):
    """A relaxation used all ``NSW`` ionic steps without meeting ``EDIFFG``.

    Continue from the last structure (CONTCAR) for another ``NSW`` steps.
    """

    name = "ionic_unconverged"
    kind: ClassVar[Kind] = "numerical"
    default_max_corrections = 3

    def detect(self, directory: Path) -> bool:
        run = _complete_vasprun(Path(directory))
        return run is not None and _is_relaxation(run.parameters) and not run.converged_ionic

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        structure = _contcar(Path(directory))
        if structure is None:
            raise NoCorrection("no CONTCAR to continue the relaxation from")
        nsw = read_incar(Path(directory)).get("NSW")
        return Correction(
            handler=self.name,
            description=f"relaxation not converged in NSW = {nsw} steps: continue from CONTCAR",
            restart_structure=structure,
        )


class VaspInterrupted(Interrupted):
    """Timeout, walltime or killed process: relaxations continue from CONTCAR, other runs rerun
    unchanged (with 1.5 times the walltime after a time limit)."""

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        structure = _contcar(Path(directory))
        if structure is not None and _is_relaxation(read_incar(Path(directory))):
            return self.base_correction(
                directory, "continue from CONTCAR", restart_structure=structure
            )
        return self.base_correction(directory, "rerun unchanged")
