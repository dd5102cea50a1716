"""GPAW (plane-wave PAW DFT) as a program code: input generator, template, parser, handlers.

GPAW is a Python program: Debian's ``gpaw`` package installs it for the system Python
(``/usr/bin/python3``, with its own ASE) and its PAW datasets with ``gpaw-data``. matdx runs
it as a program, like pw.x: the template writes a fixed driver script ``run.py`` and two data
files, and runs ``gpaw python run.py`` (under ``mpiexec`` for several ranks). No user value
is ever written into Python code: the driver reads ``parameters.json`` (the complete
parameters, as every template writes them) and ``structure.json`` and writes ``results.json``
on rank 0 when it has finished.

Parameters (plane-wave mode only)
---------------------------------
``ecut``
    Plane-wave cutoff, eV.
``xc``
    Exchange–correlation functional: ``LDA``, ``PBE``, ``revPBE``, ``RPBE`` or ``PBEsol``.
``kpoints``
    ``{"density": points per Å⁻¹}`` (2π included, :func:`~matdx.codes.kpoints.kpoint_grid`)
    or ``{"grid": [n1, n2, n3]}``; Γ-centred grids.
``smearing_width``
    Fermi–Dirac width, eV.
``convergence``
    GPAW's SCF criteria, e.g. ``{"energy": 0.0005}`` (eV per valence electron).
``maxiter``
    SCF iterations before GPAW gives up.
``mixer``
    ``{"beta", "nmaxold", "weight"}`` of GPAW's density mixer (omitted: GPAW's default).
``spinpol``
    Spin-polarised calculation.
``relax``
    ``{"fmax": eV/Å, "steps": int}`` of ASE's BFGS for ``relax`` and ``vc-relax`` (the cell
    through ASE's ``ExpCellFilter``).

Outputs: ``gpaw.txt`` (GPAW's log), ``relax.log`` (BFGS), ``results.json``. Energies in eV
(the free energy E − TS, whose derivatives are the forces), forces eV/Å, stress eV/Å³ in ASE's
sign convention.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms

from matdx.codes.bandgap import gap_value
from matdx.codes.base import (
    Template,
    read_parameters_record,
    refusing_unsafe_values,
    write_parameters_record,
)
from matdx.codes.errors import InputError, Kind, NoCorrection, ReadError, SCFError
from matdx.codes.execution import Profile
from matdx.codes.handlers import Correction, ErrorHandler, Interrupted, OutOfMemory, search
from matdx.codes.inputs import InputGenerator
from matdx.codes.kpoints import kpoint_grid
from matdx.codes.registry import CodeInfo
from matdx.codes.results import CalculationResult
from matdx.safety.text import check_choice

__all__ = ["CODE", "GpawInputs", "GpawSCF", "GpawTemplate", "setup_directories"]

DRIVER, STRUCTURE, RESULTS = "run.py", "structure.json", "results.json"
OUTPUT, ERROR, LOG, RELAX_LOG = "gpaw.out", "gpaw.err", "gpaw.txt", "relax.log"
FUNCTIONALS = ("LDA", "PBE", "revPBE", "RPBE", "PBEsol")
_KEYS = frozenset({"ecut", "xc", "kpoints", "smearing_width", "convergence", "maxiter",
                   "mixer", "spinpol", "relax", "parent_directory"})
_DEFAULTS: dict[str, Any] = {"ecut": 400.0, "xc": "PBE", "smearing_width": 0.1,
                             "convergence": {}, "maxiter": 333, "mixer": None,
                             "spinpol": False, "relax": {"fmax": 0.02, "steps": 200}}
_SETUP = re.compile(r"^([A-Z][a-z]?)\.([A-Za-z]+)(?:\.gz)?$")

# The driver runs under GPAW's own Python; it reads data files only (never user code).
_DRIVER_SOURCE = '''\
"""matdx driver for GPAW: parameters.json + structure.json -> results.json."""
import json
import time

from ase import Atoms
from ase.constraints import ExpCellFilter
from ase.optimize import BFGS
from gpaw import GPAW, PW, FermiDirac, Mixer, __version__
from gpaw.mpi import world

start = time.time()
with open("parameters.json") as handle:
    record = json.load(handle)
calculation, p = record["calculation"], record["parameters"]
with open("structure.json") as handle:
    s = json.load(handle)
atoms = Atoms(symbols=s["symbols"], positions=s["positions"], cell=s["cell"], pbc=s["pbc"])
if p["spinpol"]:
    atoms.set_initial_magnetic_moments([1.0] * len(atoms))
options = {}
if p["mixer"]:
    options["mixer"] = Mixer(**p["mixer"])
calc = GPAW(mode=PW(p["ecut"]), xc=p["xc"],
            kpts={"size": p["kpoints"]["grid"], "gamma": True},
            occupations=FermiDirac(p["smearing_width"]), convergence=p["convergence"],
            maxiter=p["maxiter"], spinpol=p["spinpol"], txt="gpaw.txt", **options)
atoms.calc = calc
steps, ionic_converged, iterations = 0, None, 0
if calculation in ("relax", "vc-relax"):
    target = ExpCellFilter(atoms) if calculation == "vc-relax" else atoms
    optimizer = BFGS(target, logfile="relax.log")
    ionic_converged = bool(optimizer.run(fmax=p["relax"]["fmax"], steps=p["relax"]["steps"]))
    steps = optimizer.nsteps + 1
else:
    atoms.get_potential_energy()
    steps = 1
energy = atoms.get_potential_energy(force_consistent=True)
forces = atoms.get_forces()
stress = atoms.get_stress(voigt=False) if atoms.pbc.all() else None
nspins = calc.get_number_of_spins()
nk = len(calc.get_ibz_k_points())
eigenvalues = [[list(map(float, calc.get_eigenvalues(kpt=k, spin=spin)))
                for k in range(nk)] for spin in range(nspins)]
magmoms = calc.get_magnetic_moments().tolist() if p["spinpol"] else None
if world.rank == 0:
    results = {
        "version": __version__,
        "symbols": atoms.get_chemical_symbols(),
        "positions": atoms.get_positions().tolist(),
        "cell": atoms.cell.array.tolist(),
        "pbc": atoms.pbc.tolist(),
        "energy": float(energy),
        "forces": forces.tolist(),
        "stress": None if stress is None else stress.tolist(),
        "fermi_level": float(calc.get_fermi_level()),
        "eigenvalues": eigenvalues,
        "kpoints": calc.get_ibz_k_points().tolist(),
        "kweights": calc.get_k_point_weights().tolist(),
        "magnetic_moments": magmoms,
        "total_magnetization": float(calc.get_magnetic_moment()) if p["spinpol"] else None,
        "ionic_steps": steps,
        "ionic_converged": ionic_converged,
        "walltime_s": time.time() - start,
    }
    with open("results.json.tmp", "w") as handle:
        json.dump(results, handle)
    import os
    os.replace("results.json.tmp", "results.json")
'''


def setup_directories() -> list[Path]:
    """Where GPAW looks for PAW datasets: ``$GPAW_SETUP_PATH`` then GPAW's default paths."""
    paths = [Path(p) for p in os.environ.get("GPAW_SETUP_PATH", "").split(os.pathsep) if p]
    return [*paths, Path("/usr/local/share/gpaw-setups"), Path("/usr/share/gpaw-setups")]


def _available_setups(xc: str) -> set[str]:
    """Elements with a standard PAW dataset for ``xc`` (PBEsol uses the PBE datasets, as GPAW
    itself does for functionals without their own)."""
    family = "PBE" if xc == "PBEsol" else xc
    found = set()
    for directory in setup_directories():
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            match = _SETUP.match(path.name)
            if match and match.group(2) == family:
                found.add(match.group(1))
    return found


class GpawInputs(InputGenerator):
    """GPAW parameters of one run: protocol (cutoff, k-point density, SCF and BFGS
    thresholds), then a fixed Γ-centred grid for the structure."""

    code: ClassVar[str] = "gpaw"
    levels: ClassVar[dict[str, Any]] = {
        "moderate": {
            "kpoints": {"density": 4.0},
            "parameters": {"ecut": 400.0, "xc": "PBE", "smearing_width": 0.1,
                           "convergence": {"energy": 5.0e-4},
                           "relax": {"fmax": 0.02, "steps": 200}},
        },
        "fast": {
            "PARENT": "moderate",
            "kpoints": {"density": 2.5},
            "parameters": {"ecut": 300.0, "convergence": {"energy": 1.0e-3},
                           "relax": {"fmax": 0.05}},
        },
        "precise": {
            "PARENT": "moderate",
            "kpoints": {"density": 6.0},
            "parameters": {"ecut": 600.0, "convergence": {"energy": 1.0e-5},
                           "relax": {"fmax": 0.005, "steps": 500}},
        },
    }

    def check(self, elements: list[str], parameters: dict[str, Any]) -> None:
        """Raise ``ValueError`` unless every element has a PAW dataset for the functional."""
        xc = str(parameters.get("xc", "PBE"))
        if xc not in FUNCTIONALS:
            raise ValueError(f"xc={xc!r}: expected one of {', '.join(FUNCTIONALS)}")
        missing = sorted(set(elements) - _available_setups(xc))
        if missing:
            raise ValueError(
                f"no GPAW {xc} PAW dataset for {', '.join(missing)} in "
                f"{', '.join(str(p) for p in setup_directories())}; apt-get install gpaw-data"
            )

    def for_forces(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """Converge the density too (``convergence.density`` 1e-6) unless set."""
        parameters = super().for_forces(parameters)
        parameters.setdefault("convergence", {}).setdefault("density", 1.0e-6)
        return parameters

    def method(self, result: Any, level: str) -> dict[str, Any]:
        """The common method section plus functional, basis (eV), k-points and smearing."""
        method = super().method(result, level)
        parameters = result.parameters or {}
        method["functional"] = parameters.get("xc")
        method["basis"] = {"ecut": parameters.get("ecut"), "unit": "eV"}
        method["kpoints"] = parameters.get("kpoints") or {}
        method["smearing"] = {"type": "fermi-dirac", "width_eV": parameters.get("smearing_width")}
        method["spin"] = {"nspin": 2 if parameters.get("spinpol") else 1}
        return method


def _number(parameters: Mapping[str, Any], key: str, positive: bool = True) -> float:
    value = parameters[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise InputError(f"parameters[{key!r}]={value!r}: expected a number")
    if positive and not value > 0:
        raise InputError(f"parameters[{key!r}]={value!r}: expected a positive number")
    return float(value)


def _numbers(mapping: Any, where: str, allowed: set[str] | None = None) -> dict[str, float]:
    if not isinstance(mapping, Mapping):
        raise InputError(f"parameters[{where!r}]={mapping!r}: expected a mapping")
    out = {}
    for key, value in mapping.items():
        if allowed is not None and key not in allowed:
            raise InputError(f"parameters[{where!r}]: unknown key {key!r}; accepted: "
                             f"{sorted(allowed)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise InputError(f"parameters[{where!r}][{key!r}]={value!r}: expected a positive "
                             "number")
        out[str(key)] = value
    return out


class GpawTemplate(Template):
    """GPAW in plane-wave mode, driven by ``gpaw python run.py`` (tested with Debian's 22.8).

    Files: ``run.py``, ``structure.json``, ``parameters.json``, ``gpaw.txt``, ``relax.log``,
    ``results.json``, ``gpaw.out``/``gpaw.err``.
    """

    name = "gpaw"
    calculations: ClassVar[frozenset[str]] = frozenset({"static", "relax", "vc-relax"})
    stdout = OUTPUT
    stderr = ERROR
    default_binary: ClassVar[tuple[str, ...]] = ("gpaw",)
    install_hint = "apt-get install gpaw gpaw-data"

    def default_handlers(self) -> tuple[ErrorHandler, ...]:
        return (OutOfMemory((OUTPUT, ERROR, LOG)), GpawSCF(), Interrupted())

    def arguments(self) -> list[str]:
        return ["python", DRIVER]

    def output_files(self) -> tuple[str, ...]:
        return (OUTPUT, ERROR, LOG)

    def complete_parameters(self, atoms: Atoms, parameters: Mapping[str, Any]
                            ) -> dict[str, Any]:
        """The parameters as written: defaults filled in, the k-point grid resolved.

        Raises
        ------
        InputError
            Unknown keys or values GPAW cannot take.
        """
        unknown = sorted(set(parameters) - _KEYS)
        if unknown:
            raise InputError(f"parameters: unknown keys {unknown}; accepted: {sorted(_KEYS)}")
        p = {**_DEFAULTS, **{k: v for k, v in parameters.items() if v is not None}}
        p.pop("parent_directory", None)
        with refusing_unsafe_values():
            p["xc"] = check_choice(p["xc"], "xc", FUNCTIONALS)
        p["ecut"] = _number(p, "ecut")
        p["smearing_width"] = _number(p, "smearing_width")
        maxiter = p["maxiter"]
        if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1:
            raise InputError(f"parameters['maxiter']={maxiter!r}: expected an integer >= 1")
        p["convergence"] = _numbers(p["convergence"], "convergence",
                                    {"energy", "density", "eigenstates", "forces"})
        if p["mixer"] is not None:
            p["mixer"] = _numbers(p["mixer"], "mixer", {"beta", "nmaxold", "weight"})
            if "nmaxold" in p["mixer"]:
                p["mixer"]["nmaxold"] = int(p["mixer"]["nmaxold"])
        relax = {**_DEFAULTS["relax"], **dict(p["relax"] or {})}
        relax = _numbers(relax, "relax", {"fmax", "steps"})
        relax["steps"] = int(relax["steps"])
        p["relax"] = relax
        p["spinpol"] = bool(p["spinpol"])
        kpoints = p.get("kpoints") or {"density": 4.0}
        if not isinstance(kpoints, Mapping):
            raise InputError(f"parameters['kpoints']={kpoints!r}: expected a mapping")
        if "grid" in kpoints:
            grid = kpoints["grid"]
            if (not isinstance(grid, list | tuple) or len(grid) != 3
                    or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                               for n in grid)):
                raise InputError(f"kpoints grid={grid!r}: expected three integers >= 1")
        elif "density" in kpoints:
            grid = kpoint_grid(atoms.cell, float(kpoints["density"]), atoms.pbc)
        else:
            raise InputError(f"parameters['kpoints']={kpoints!r}: give 'density' or 'grid'")
        p["kpoints"] = {"grid": [int(n) for n in grid]}
        return p

    def write_input(
        self,
        directory: Path,
        atoms: Atoms,
        parameters: Mapping[str, Any],
        calculation: str,
        *,
        profile: Profile | None = None,
    ) -> None:
        """Write ``run.py``, ``structure.json`` and ``parameters.json``.

        Raises
        ------
        InputError
            Unknown keys, bad values, an empty structure or an unsupported calculation.
        """
        self.check_calculation(calculation)
        if len(atoms) == 0:
            raise InputError("atoms: empty structure")
        if calculation == "vc-relax" and not atoms.pbc.all():
            raise InputError("calculation='vc-relax' needs a periodic cell")
        p = self.complete_parameters(atoms, parameters)
        directory = Path(directory)
        structure = {"symbols": atoms.get_chemical_symbols(),
                     "positions": atoms.get_positions().tolist(),
                     "cell": atoms.cell.array.tolist(), "pbc": [bool(x) for x in atoms.pbc]}
        (directory / STRUCTURE).write_text(json.dumps(structure) + "\n")
        (directory / DRIVER).write_text(_DRIVER_SOURCE)
        write_parameters_record(directory, self.name, calculation, p)

    def read_results(self, directory: Path) -> CalculationResult:
        """Parse ``results.json`` (written by the driver when GPAW has finished).

        Raises
        ------
        ReadError
            When it is missing or unreadable: the run did not finish (GPAW's error, if any,
            is the last line of ``gpaw.err``).
        """
        directory = Path(directory)
        path = directory / RESULTS
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            error = _last_error(directory)
            reason = f"no {RESULTS}: GPAW did not finish" + (f" ({error})" if error else "")
            raise ReadError(directory, reason, "program" if error else "infrastructure",
                            path=path) from None
        except (OSError, ValueError) as err:
            raise ReadError(directory, f"{RESULTS}: {err}", path=path) from err
        record = read_parameters_record(directory) or {}
        calculation = str(record.get("calculation", "static"))
        parameters = record.get("parameters") or {}
        structure = Atoms(symbols=data["symbols"], positions=data["positions"],
                          cell=data["cell"], pbc=data["pbc"])
        eigenvalues = np.asarray(data["eigenvalues"], dtype=float)
        fermi = data.get("fermi_level")
        ionic = data.get("ionic_converged")
        return CalculationResult(
            code=self.name,
            calculation=calculation,
            structure=structure,
            converged=ionic is not False,
            code_version=f"gpaw {data.get('version')}",
            scf_converged=True,
            ionic_converged=ionic,
            energy=float(data["energy"]),
            forces=np.asarray(data["forces"], dtype=float),
            stress=None if data.get("stress") is None else np.asarray(data["stress"], float),
            fermi_level=fermi,
            band_gap=None if fermi is None else gap_value(eigenvalues, fermi),
            eigenvalues=eigenvalues,
            kpoints=np.asarray(data["kpoints"], dtype=float),
            kweights=np.asarray(data["kweights"], dtype=float),
            magnetic_moments=None if data.get("magnetic_moments") is None
            else np.asarray(data["magnetic_moments"], dtype=float),
            total_magnetization=data.get("total_magnetization"),
            n_ionic_steps=int(data.get("ionic_steps") or 1),
            walltime_s=data.get("walltime_s"),
            parameters=parameters,
        )


def _last_error(directory: Path) -> str | None:
    """The last ``SomethingError: message`` line of GPAW's stderr, or None."""
    try:
        lines = (directory / ERROR).read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line.strip()):
            return line.strip()
    return None


class GpawSCF(ErrorHandler):
    """GPAW stopped with ``KohnShamConvergenceError``: the SCF did not converge in ``maxiter``.

    First correction: twice the iterations (at least GPAW's default 333, at most 1000) and a
    gentler density mixer
    (``beta`` 0.02, ``nmaxold`` 8); then half that ``beta`` again, down to 0.005.
    """

    name: ClassVar[str] = "gpaw_scf"
    kind: ClassVar[Kind] = "numerical"
    error_class: ClassVar[type[SCFError]] = SCFError

    def detect(self, directory: Path) -> bool:
        return search(directory, (ERROR, OUTPUT, LOG),
                      re.compile(r"KohnShamConvergenceError")) is not None

    def correct(self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
                ) -> Correction:
        maxiter = int(parameters.get("maxiter") or _DEFAULTS["maxiter"])
        mixer = dict(parameters.get("mixer") or {})
        beta = float(mixer.get("beta", 0.04))
        new_beta = 0.02 if beta > 0.02 else beta / 2
        if new_beta < 0.005:
            raise NoCorrection(f"mixer beta {beta} is already at the floor of 0.005")
        updates = {"maxiter": min(1000, max(2 * maxiter, _DEFAULTS["maxiter"])),
                   "mixer": {**mixer, "beta": new_beta, "nmaxold": 8}}
        return Correction(
            handler=self.name,
            description=f"SCF not converged: maxiter {updates['maxiter']}, mixer beta "
                        f"{new_beta}",
            parameter_updates=updates,
        )


_INPUTS = GpawInputs()

CODE = CodeInfo(
    "gpaw", frozenset({"static", "relax", "eos"}), program="gpaw",
    install_hint="apt-get install gpaw gpaw-data", template=GpawTemplate,
    check_inputs=_INPUTS.check, inputs=_INPUTS,
)
