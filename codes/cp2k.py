"""CP2K (Quickstep, GPW): input file, output parser and error handlers.

Why an input file and ``cp2k -i`` rather than ASE's ``CP2K`` calculator: Debian's ``cp2k``
package installs ``cp2k_shell`` (a link to ``cp2k.psmp``) and ASE's shell route does work here,
but it keeps CP2K running as a co-process driven through a pipe by the Python process. matdx
needs the same model for every code: a run directory with the input, written on a login node
and run anywhere (by :func:`~matdx.codes.base.run_calculation`, a batch script or the task
farm) under the MPI launcher of the :class:`~matdx.codes.execution.Profile`, with a timeout,
and with the complete output on disk for the error handlers, including after the process died.
So the template writes ``cp2k.inp`` itself and runs ``cp2k -i cp2k.inp`` (stdout is
``cp2k.out``).

Calculations: ``static`` (``ENERGY_FORCE``) and ``relax`` (``GEO_OPT``).

Parameters (a dict, never modified)::

    {
        "xc": "PBE",                         # XC_FUNCTIONAL section parameter
        "cutoff": 400.0, "rel_cutoff": 50.0, # Ry (MGRID)
        "basis_set": "DZVP-MOLOPT-SR-GTH",   # or {element: name}
        "pseudopotential": "GTH-PBE",        # or {element: name}
        "basis_set_file": "BASIS_MOLOPT", "potential_file": "GTH_POTENTIALS",
        "max_scf": 50, "eps_scf": 1e-6,
        "scf_method": "ot",                  # or "diagonalization" (needed for k-points, smearing)
        "smearing_temperature": None,        # K, Fermi-Dirac (diagonalization)
        "kpoints": None,                     # {"grid": [n1, n2, n3]} | {"density": 5.0}
        "charge": 0, "multiplicity": None, "uks": None,   # UKS when spin polarised
        "max_geo_steps": 200,                # relax
        "parent_directory": None,            # restart the wavefunction from there
        "input": {...},                      # raw sections deep-merged last
    }

Raw sections (``input`` and correction updates) are nested dicts with upper-case names: a dict
value is a subsection, a list of dicts a repeated section, ``"_"`` the section parameter
(``{"XC_FUNCTIONAL": {"_": "PBE"}}``), ``KIND`` a dict keyed by kind label, ``None`` removes a
keyword, and ``True``/``False`` become ``.TRUE.``/``.FALSE.``.

Units on read: Hartree → eV, Hartree/Bohr → eV/Å, GPa → eV/Å³ with the sign flipped to ASE's
convention (CP2K prints positive stress under compression). An output without ``PROGRAM ENDED``
raises :class:`~matdx.codes.errors.ReadError` (with the ``[ABORT]`` message if there is one).
Eigenvalues and band gaps are not parsed (CP2K prints them only on request).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.io import read as ase_read
from ase.units import Bohr, GPa, Hartree

from matdx.codes.base import (
    Template,
    read_parameters_record,
    refusing_unsafe_values,
    write_parameters_record,
)
from matdx.codes.custodian_handlers import CustodianHandler, Diagnosis, Translation
from matdx.codes.errors import InputError, Kind, NoCorrection, ReadError, SCFError
from matdx.codes.execution import Profile
from matdx.codes.handlers import (
    Correction,
    ErrorHandler,
    Interrupted,
    OutOfMemory,
    deep_merge,
    read_text,
)
from matdx.codes.inputs import InputGenerator
from matdx.codes.kpoints import kpoint_grid
from matdx.codes.monitors import Monitor, StopFileBeforeLimit, clean_stop_margin
from matdx.codes.registry import CodeInfo
from matdx.codes.results import CalculationResult, atoms_from_dict, atoms_to_dict
from matdx.codes.trajectory import Frames
from matdx.safety.text import check_keys, check_tree

__all__ = [
    "STOP_FILE",
    "Cp2kCholesky",
    "Cp2kGeoOpt",
    "Cp2kInputError",
    "Cp2kInterrupted",
    "Cp2kSCF",
    "Cp2kTemplate",
    "custodian_handlers",
    "format_cp2k_input",
    "input_error",
    "parse_cp2k_input",
    "parse_cp2k_output",
    "stopped_on_request",
]

INPUT, OUTPUT, ERROR, PROJECT = "cp2k.inp", "cp2k.out", "cp2k.err", "cp2k"
STOP_FILE = f"{PROJECT}.EXIT"
"""CP2K polls for ``PROJECT.EXIT`` (and ``EXIT``) in its working directory at every SCF and
geometry step; when it appears CP2K ends the loops, prints ``*** SCF run terminated by external
request ***``, writes its restart files and ends normally (and deletes the file)."""
CP2K_STOP_LATENCY_S = 30.0
"""Least seconds before a time limit at which ``cp2k.EXIT`` is written (CP2K reacts late)."""
_STOP_REQUESTED = re.compile(
    r"run terminated by external request|exceeded requested execution time"
)
# Section and keyword names of raw ``input`` sections (``_`` is the section parameter,
# ``_lines`` raw lines, KIND labels are element-like words).
CP2K_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
CP2K_NAME_RULE = "a CP2K section or keyword name (letters, digits, _ and -)"
_RUN_TYPES = {"static": "ENERGY_FORCE", "relax": "GEO_OPT"}
_VERSION = re.compile(r"CP2K\| version string:\s+CP2K version (\S+)")
_KEYS = frozenset(
    {
        "xc", "cutoff", "rel_cutoff", "basis_set", "pseudopotential", "basis_set_file",
        "potential_file", "max_scf", "eps_scf", "scf_method", "smearing_temperature", "kpoints",
        "charge", "multiplicity", "uks", "max_geo_steps", "parent_directory", "input",
    }
)


# --------------------------------------------------------------------------- input format


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return ".TRUE." if value else ".FALSE."
    if isinstance(value, list | tuple):
        return " ".join(_value(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_cp2k_input(tree: Mapping[str, Any], indent: int = 0) -> str:
    """CP2K input text of a nested section dict (see the module docstring)."""
    pad = "  " * indent
    lines: list[str] = []
    for key, value in tree.items():
        if key in {"_", "_lines"} or value is None:
            continue
        if key == "KIND" and isinstance(value, Mapping):
            for label, section in value.items():
                lines.append(_section("KIND", {**dict(section), "_": label}, indent))
        elif isinstance(value, Mapping):
            lines.append(_section(key, value, indent))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            lines.extend(_section(key, item, indent) for item in value)
        else:
            lines.append(f"{pad}{key} {_value(value)}")
    return "\n".join(line for line in lines if line)


def _section(name: str, body: Mapping[str, Any], indent: int) -> str:
    pad = "  " * indent
    parameter = body.get("_")
    head = f"{pad}&{name}" + (f" {_value(parameter)}" if parameter is not None else "")
    inner = [f"{pad}  {line}" for line in body.get("_lines", [])]
    text = format_cp2k_input(body, indent + 1)
    return "\n".join([head, *inner, *([text] if text else []), f"{pad}&END {name}"])


def parse_cp2k_input(text: str) -> dict[str, Any]:
    """Nested dict of a CP2K input (upper-case names, values as strings).

    Repeated sections become lists, except ``KIND`` which is keyed by its label; section
    parameters are stored under ``"_"``; ``@``-directives are not expanded.
    """
    root: dict[str, Any] = {}
    stack: list[tuple[str, dict[str, Any]]] = [("", root)]
    for raw in text.splitlines():
        line = raw.split("!")[0].split("#")[0].strip()
        if not line:
            continue
        if line.upper().startswith("&END"):
            if len(stack) > 1:
                stack.pop()
            continue
        parent = stack[-1][1]
        if line.startswith("&"):
            parts = line[1:].split(None, 1)
            name = parts[0].upper()
            section: dict[str, Any] = {}
            if len(parts) > 1:
                section["_"] = parts[1].strip()
            if name == "KIND":
                parent.setdefault("KIND", {})[section.get("_", "")] = section
            elif name in parent:
                existing = parent[name]
                parent[name] = [*existing, section] if isinstance(existing, list) else [
                    existing, section
                ]
            else:
                parent[name] = section
            stack.append((name, section))
        else:
            parts = line.split(None, 1)
            key = parts[0].upper()
            if stack[-1][0] in {"COORD", "VELOCITY", "COORD_REF"}:
                parent.setdefault("_lines", []).append(line)
            else:
                parent[key] = parts[1].strip() if len(parts) > 1 else ""
    return root


def _get(tree: Mapping[str, Any], *path: str) -> Any:
    node: Any = tree
    for key in path:
        if isinstance(node, list):
            node = node[0] if node else {}
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


# --------------------------------------------------------------------------- output parsing


def parse_cp2k_output(text: str) -> dict[str, Any]:
    """Energies (Ha), forces (Ha/Bohr), stresses (GPa, CP2K sign), SCF and geometry
    optimisation flags, version, wall time, warnings and the ``[ABORT]`` message."""
    lines = text.splitlines()
    out: dict[str, Any] = {
        "version": None, "energies": [], "forces": [], "stresses": [], "scf_steps": [],
        "scf_unconverged": 0, "geo_completed": False, "geo_max_steps": False,
        "ended": False, "abort": None, "walltime_s": None, "warnings": [], "fermi": None,
    }
    i = 0
    while i < len(lines):
        line = lines[i]
        if out["version"] is None and (m := _VERSION.search(line)):
            out["version"] = m.group(1)
        elif m := re.search(r"ENERGY\| Total FORCE_EVAL \( \w+ \) energy \S*:\s+(\S+)", line):
            out["energies"].append(float(m.group(1)))
        elif "ATOMIC FORCES in" in line or "FORCES| Atomic forces" in line:
            rows, j = [], i + 1
            while j < len(lines) and not re.search(r"SUM OF ATOMIC FORCES|Sum of", lines[j]):
                parts = lines[j].replace("FORCES|", "").split()
                if len(parts) >= 6 and parts[0].isdigit():
                    rows.append([float(x) for x in parts[-3:]])
                j += 1
            out["forces"].append(np.array(rows))
            i = j
        elif re.search(r"stress tensor \[GPa\]", line, re.IGNORECASE) and "Eigen" not in line:
            rows, j = [], i + 1
            while j < len(lines) and len(rows) < 3 and j < i + 6:
                parts = lines[j].replace("STRESS|", "").split()
                if len(parts) == 4 and parts[0].lower() in {"x", "y", "z"}:
                    rows.append([float(x) for x in parts[1:]])
                j += 1
            if len(rows) == 3:
                out["stresses"].append(np.array(rows))
            i = j - 1
        elif m := re.search(r"SCF run converged in\s+(\d+)\s+steps", line):
            out["scf_steps"].append(int(m.group(1)))
        elif "SCF run NOT converged" in line or "outer SCF loop FAILED to converge" in line:
            out["scf_unconverged"] += 1
        elif "GEOMETRY OPTIMIZATION COMPLETED" in line:
            out["geo_completed"] = True
        elif "MAXIMUM NUMBER OF OPTIMIZATION STEPS REACHED" in line:
            out["geo_max_steps"] = True
        elif "PROGRAM ENDED AT" in line:
            out["ended"] = True
        elif "[ABORT]" in line and out["abort"] is None:
            box = []
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("*****"):
                text_part = lines[j].strip().strip("*").strip()
                text_part = re.sub(r"^(\\___/|\||O/\||/\| \||/ \\)\s*", "", text_part).strip()
                if text_part and not re.fullmatch(r"[\w/.]+\.F:\d+", text_part):
                    box.append(text_part)
                j += 1
            out["abort"] = " ".join(box) or "CP2K aborted"
            i = j
        elif m := re.match(r"\s*CP2K\s+1\s+\S+\s+\S+\s+\S+\s+\S+\s+(\S+)\s*$", line):
            out["walltime_s"] = float(m.group(1))
        elif m := re.search(r"Fermi energy:\s+(\S+)", line):
            out["fermi"] = float(m.group(1))
        elif "*** WARNING in" in line:
            note = re.sub(r"\s+", " ", line.strip(" *"))
            if note not in out["warnings"]:
                out["warnings"].append(note)
        i += 1
    return out


# --------------------------------------------------------------------------- template


class Cp2kTemplate(Template):
    """CP2K 2023.1 (Debian ``cp2k``; data files from ``cp2k-data`` are found without settings).

    Files: ``cp2k.inp``, ``cp2k.out`` (stdout), ``cp2k.err``, ``cp2k-pos-1.xyz`` (relax),
    ``cp2k-RESTART.wfn``, ``parameters.json``.
    """

    name = "cp2k"
    calculations: ClassVar[frozenset[str]] = frozenset(_RUN_TYPES)
    stdout = OUTPUT
    stderr = ERROR
    default_binary: ClassVar[tuple[str, ...]] = ("cp2k",)
    install_hint = "apt-get install cp2k cp2k-data"

    def default_handlers(self) -> tuple[ErrorHandler, ...]:
        """matdx's SCF, Cholesky and geometry handlers (tested on real CP2K runs) first, then
        custodian's for what they do not know (an abort, stagnant imprecise SCF, a run stuck in
        the OT preconditioner), then the walltime restart."""
        return (
            Cp2kInputError(),
            OutOfMemory((OUTPUT, ERROR)),
            Cp2kCholesky(),
            Cp2kSCF(),
            Cp2kGeoOpt(),
            *custodian_handlers(),
            Cp2kInterrupted(),
        )

    def clean_stop(self, directory: Path, timeout_s: float) -> Monitor | None:
        """With a time limit of 60 s or more, ``cp2k.EXIT`` written 10 % of it (30 s to
        10 min) before it ends: CP2K then stops its SCF and geometry loops, writes
        ``cp2k-RESTART.wfn`` and ends by itself, and :class:`Cp2kInterrupted` continues from
        there. At least 30 s: CP2K 2023.1 noticed the file 17-19 s after it appeared in our
        runs (it does not look for it at every SCF step)."""
        if timeout_s < 60.0:
            return None
        margin = max(clean_stop_margin(timeout_s), CP2K_STOP_LATENCY_S)
        return StopFileBeforeLimit(timeout_s, margin, STOP_FILE)

    def arguments(self) -> list[str]:
        return ["-i", INPUT]

    def write_input(
        self,
        directory: Path,
        atoms: Atoms,
        parameters: Mapping[str, Any],
        calculation: str,
        *,
        profile: Profile | None = None,
    ) -> None:
        """Write ``cp2k.inp`` (and copy the parent's wavefunction).

        Raises
        ------
        InputError
            Unknown keys, partly periodic cells, a missing box for a molecule, k-points or
            smearing with OT, or an unknown ``scf_method``.
        """
        self.check_calculation(calculation)
        directory = Path(directory)
        unknown = sorted(set(parameters) - _KEYS)
        if unknown:
            raise InputError(f"parameters: unknown keys {unknown}; accepted: {sorted(_KEYS)}")
        with refusing_unsafe_values():
            check_tree(dict(parameters), "parameters")
            raw = {k: v for k, v in dict(parameters.get("input") or {}).items()}
            check_keys(raw, "parameters.input", CP2K_NAME, CP2K_NAME_RULE)
        if len(atoms) == 0:
            raise InputError("atoms: empty structure")
        tree = self._tree(atoms, parameters, calculation)
        parent = parameters.get("parent_directory")
        if parent:
            source = Path(parent) / f"{PROJECT}-RESTART.wfn"
            if not source.is_file():
                raise InputError(f"parameters['parent_directory']: {str(source)!r} does not exist")
            shutil.copyfile(source, directory / f"{PROJECT}-parent.wfn")
            tree = deep_merge(
                tree,
                {
                    "FORCE_EVAL": {
                        "DFT": {
                            "WFN_RESTART_FILE_NAME": f"{PROJECT}-parent.wfn",
                            "SCF": {"SCF_GUESS": "RESTART"},
                        }
                    }
                },
            )
        tree = deep_merge(tree, parameters.get("input") or {})
        (directory / INPUT).write_text(format_cp2k_input(tree) + "\n")
        record = {
            key: parameters[key] for key in sorted(parameters) if key not in {"input"}
        }
        record["input"] = tree
        record["input_structure"] = atoms_to_dict(atoms)
        write_parameters_record(directory, self.name, calculation, record)

    @staticmethod
    def _tree(atoms: Atoms, p: Mapping[str, Any], calculation: str) -> dict[str, Any]:
        pbc = [bool(x) for x in atoms.pbc]
        if any(pbc) and not all(pbc):
            raise InputError(f"atoms.pbc={pbc}: use fully periodic or non-periodic systems")
        periodic = all(pbc)
        if abs(np.linalg.det(atoms.cell.array)) < 1e-6:
            raise InputError("atoms.cell: a box is needed (e.g. atoms.center(vacuum=4.0))")
        xc = str(p.get("xc", "PBE")).upper()
        method = str(p.get("scf_method", "ot")).lower()
        if method not in {"ot", "diagonalization"}:
            raise InputError(f"scf_method={method!r}; accepted: 'ot', 'diagonalization'")
        kpoints = p.get("kpoints")
        smearing = p.get("smearing_temperature")
        if method == "ot" and (kpoints or smearing):
            raise InputError("k-points and smearing need scf_method='diagonalization'")
        symbols = list(dict.fromkeys(atoms.get_chemical_symbols()))

        def per_element(value: Any, element: str) -> Any:
            return value.get(element) if isinstance(value, Mapping) else value

        basis = p.get("basis_set", "DZVP-MOLOPT-SR-GTH")
        potential = p.get("pseudopotential", f"GTH-{xc}")
        moments = atoms.get_initial_magnetic_moments()
        uks = p.get("uks")
        if uks is None:
            uks = bool(np.any(moments != 0)) or (p.get("multiplicity") or 1) > 1
        scf: dict[str, Any] = {
            "MAX_SCF": int(p.get("max_scf", 50)),
            "EPS_SCF": float(p.get("eps_scf", 1e-6)),
            "SCF_GUESS": "ATOMIC",
        }
        if method == "ot":
            scf["OT"] = {"MINIMIZER": "DIIS", "PRECONDITIONER": "FULL_ALL"}
        else:
            scf["DIAGONALIZATION"] = {"ALGORITHM": "STANDARD"}
            scf["MIXING"] = {"METHOD": "BROYDEN_MIXING", "ALPHA": 0.4, "NBROYDEN": 8}
            if smearing:
                scf["ADDED_MOS"] = max(10, len(atoms))
                scf["SMEAR"] = {
                    "_": True,
                    "METHOD": "FERMI_DIRAC",
                    "ELECTRONIC_TEMPERATURE": float(smearing),
                }
        dft: dict[str, Any] = {
            "BASIS_SET_FILE_NAME": p.get("basis_set_file", "BASIS_MOLOPT"),
            "POTENTIAL_FILE_NAME": p.get("potential_file", "GTH_POTENTIALS"),
            "CHARGE": int(p.get("charge", 0)),
            "UKS": bool(uks),
            "MGRID": {
                "CUTOFF": float(p.get("cutoff", 400.0)),
                "REL_CUTOFF": float(p.get("rel_cutoff", 50.0)),
            },
            "QS": {"EPS_DEFAULT": 1e-10},
            "SCF": scf,
            "XC": {"XC_FUNCTIONAL": {"_": xc}},
        }
        if p.get("multiplicity"):
            dft["MULTIPLICITY"] = int(p["multiplicity"])
        if not periodic:
            dft["POISSON"] = {"PERIODIC": "NONE", "PSOLVER": "MT"}
        if kpoints:
            grid = (
                kpoint_grid(atoms.cell, float(kpoints["density"]), atoms.pbc)
                if "density" in kpoints
                else tuple(int(n) for n in kpoints["grid"])
            )
            dft["KPOINTS"] = {"SCHEME": ["MONKHORST-PACK", *grid]}
        kinds: dict[str, Any] = {}
        for element in symbols:
            kinds[element] = {
                "ELEMENT": element,
                "BASIS_SET": per_element(basis, element),
                "POTENTIAL": per_element(potential, element),
            }
        cell = {
            "A": list(map(float, atoms.cell[0])),
            "B": list(map(float, atoms.cell[1])),
            "C": list(map(float, atoms.cell[2])),
            "PERIODIC": "XYZ" if periodic else "NONE",
        }
        coords = [
            f"{s} {x:.10f} {y:.10f} {z:.10f}"
            for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)
        ]
        force_eval: dict[str, Any] = {
            "METHOD": "QUICKSTEP",
            "DFT": dft,
            "SUBSYS": {"CELL": cell, "COORD": {"_lines": coords}, "KIND": kinds},
            "PRINT": {"FORCES": {"_": "ON"}},
        }
        if periodic:
            force_eval["STRESS_TENSOR"] = "ANALYTICAL"
            force_eval["PRINT"]["STRESS_TENSOR"] = {"_": "ON"}
        tree: dict[str, Any] = {
            "GLOBAL": {
                "PROJECT": PROJECT,
                "RUN_TYPE": _RUN_TYPES[calculation],
                "PRINT_LEVEL": "MEDIUM",
            },
            "FORCE_EVAL": force_eval,
        }
        if calculation == "relax":
            tree["MOTION"] = {
                "GEO_OPT": {"MAX_ITER": int(p.get("max_geo_steps", 200)), "OPTIMIZER": "BFGS"}
            }
        return tree

    def read_results(self, directory: Path) -> CalculationResult:
        """Parse ``cp2k.out`` (and ``cp2k-pos-1.xyz`` for relaxations).

        Raises
        ------
        ReadError
            ``cp2k.out`` missing, aborted (``[ABORT]``) or truncated (no ``PROGRAM ENDED``).
        """
        directory = Path(directory)
        path = directory / OUTPUT
        if not path.is_file():
            raise ReadError(directory, f"{OUTPUT} is missing", path=path)
        out = parse_cp2k_output(path.read_text(errors="replace"))
        if out["abort"]:
            raise ReadError(
                directory, f"CP2K aborted: {out['abort']}", kind="input", path=path
            )
        if not out["ended"]:
            raise ReadError(directory, f"{OUTPUT} is truncated: no 'PROGRAM ENDED'", path=path)
        record = read_parameters_record(directory)
        if record is None or not out["energies"]:
            raise ReadError(directory, "parameters.json or the energy is missing", path=path)
        calculation, parameters = record["calculation"], record["parameters"]
        initial = atoms_from_dict(parameters["input_structure"])
        geometries = [initial, *self._positions(directory, initial)]
        structure = geometries[-1]
        relaxing = calculation == "relax"
        ionic = (out["geo_completed"] and not out["geo_max_steps"]) if relaxing else None
        scf = out["scf_unconverged"] == 0
        forces = out["forces"][-1] * Hartree / Bohr if out["forces"] else None
        stress = -out["stresses"][-1] * GPa if out["stresses"] else None
        frames = None
        if relaxing:
            n = min(len(out["energies"]), len(geometries), len(out["forces"]))
            frames = Frames(
                positions=np.array([g.positions for g in geometries[:n]]),
                cells=np.array([g.cell.array for g in geometries[:n]]),
                times=np.arange(n, dtype=float),
                steps=np.arange(n, dtype=np.int64),
                velocities=None,
                forces=np.array(out["forces"][:n]) * Hartree / Bohr,
                observables={"potential_energy": np.array(out["energies"][:n]) * Hartree},
            )
        return CalculationResult(
            code=self.name,
            code_version=out["version"],
            calculation=calculation,
            structure=structure,
            converged=scf and ionic is not False,
            scf_converged=scf,
            ionic_converged=ionic,
            energy=out["energies"][-1] * Hartree,
            forces=forces,
            stress=stress,
            fermi_level=None if out["fermi"] is None else out["fermi"] * Hartree,
            n_scf_steps=sum(out["scf_steps"]) or None,
            n_ionic_steps=len(out["energies"]) if relaxing else None,
            walltime_s=out["walltime_s"],
            pseudopotentials=[
                {"element": e, "name": f"{k['POTENTIAL']} / {k['BASIS_SET']}", "sha256": None}
                for e, k in parameters["input"]["FORCE_EVAL"]["SUBSYS"]["KIND"].items()
            ],
            parameters=parameters,
            warnings=out["warnings"],
            frames=frames,
        )

    @staticmethod
    def _positions(directory: Path, initial: Atoms) -> list[Atoms]:
        path = Path(directory) / f"{PROJECT}-pos-1.xyz"
        if not path.is_file() or path.stat().st_size == 0:
            return []
        try:
            frames = ase_read(path, index=":", format="xyz")
        except (ValueError, IndexError, StopIteration):
            return []
        result = []
        for frame in frames if isinstance(frames, list) else [frames]:
            if len(frame) != len(initial):
                break
            atoms = initial.copy()
            atoms.positions = frame.positions
            result.append(atoms)
        return result


# --------------------------------------------------------------------------- handlers


def _tree_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Nested updates turning input tree ``before`` into ``after`` (``None`` removes)."""
    changes: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            inner = _tree_changes(old, value)
            if inner:
                changes[key] = inner
        elif old != value:
            changes[key] = value
    changes.update({key: None for key in before if key not in after})
    return changes


def translate_custodian(directory: Path, corrected: Path, diagnosis: Diagnosis) -> Translation:
    """The ``input`` updates that turn the failed run's ``cp2k.inp`` into the one custodian
    rewrote (both read with :func:`parse_cp2k_input`, so only real changes remain)."""
    before = parse_cp2k_input((directory / INPUT).read_text())
    after = parse_cp2k_input((corrected / INPUT).read_text())
    changes = _tree_changes(before, after)
    return Translation({"input": changes} if changes else {})


def custodian_handlers() -> tuple[CustodianHandler, ...]:
    """Custodian's CP2K handlers that matdx's own do not replace."""
    from custodian.cp2k import handlers as cc

    def wrap(make: Any, name: str, kind: Kind, **kwargs: Any) -> CustodianHandler:
        return CustodianHandler(make, f"custodian.{name}", kind, translate_custodian, **kwargs)

    files = {"input_file": INPUT, "output_file": OUTPUT}
    return (
        wrap(lambda: cc.AbortHandler(**files), "AbortHandler", "numerical",
             error_kinds={"cholesky": "numerical"}, when=_not_an_input_error),
        wrap(lambda: cc.UnconvergedScfErrorHandler(**files), "UnconvergedScfErrorHandler",
             "numerical", error_class=SCFError, when=_not_stopped_on_request),
        wrap(lambda: cc.NumericalPrecisionHandler(**files), "NumericalPrecisionHandler",
             "numerical", error_class=SCFError, when=_not_stopped_on_request),
        # a dead run directory is always "frozen" by its age: act only on a run stuck in the
        # preconditioner, whose rerun would stick again with a longer walltime
        wrap(lambda: cc.FrozenJobErrorHandler(timeout=0, **files), "FrozenJobErrorHandler",
             "numerical", found=lambda h: bool(getattr(h, "frozen_preconditioner", False))),
    )


def stopped_on_request(directory: Path) -> bool:
    """Whether CP2K ended its loops at a stop file's request or at its own walltime (its
    restart files are then complete; an unconverged SCF there is no convergence failure)."""
    return _STOP_REQUESTED.search(read_text(Path(directory) / OUTPUT)) is not None


def _not_stopped_on_request(directory: Path) -> bool:
    return not stopped_on_request(directory)


_INPUT_ABORT = re.compile(
    r"\[ABORT\](?P<box>(?:.*\n){1,12}?)\s*\*\s*/ \\\s+(?P<where>\S*input\S*\.F:\d+)\s*\*"
)


def input_error(directory: Path) -> str | None:
    """CP2K's message when it refused its input (an ``[ABORT]`` raised by its input parser,
    ``input/*.F``: an unknown keyword or section, a bad value), else None."""
    match = _INPUT_ABORT.search(read_text(Path(directory) / OUTPUT))
    if match is None:
        return None
    lines = [line.strip(" *|/\\O_") for line in match.group("box").splitlines()]
    message = " ".join(line for line in lines if line)
    return f"{message} ({match.group('where')})"


def _not_an_input_error(directory: Path) -> bool:
    return input_error(directory) is None


class Cp2kInputError(ErrorHandler):
    """CP2K refused its input (``[ABORT]`` from its input parser: an unknown keyword or
    section, a value of the wrong type). Kind ``input`` and no correction: rerunning the same
    input fails the same way, so the workflow engine fails the job at once with CP2K's
    message."""

    name = "input_refused"
    kind: ClassVar[Kind] = "input"
    default_max_corrections = 1

    def detect(self, directory: Path) -> bool:
        return input_error(Path(directory)) is not None

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        raise NoCorrection(f"CP2K refused the input: {input_error(Path(directory))}")


def _input(directory: Path) -> dict[str, Any]:
    return parse_cp2k_input(read_text(Path(directory) / INPUT))


def _scf_path(updates: dict[str, Any]) -> dict[str, Any]:
    return {"input": {"FORCE_EVAL": {"DFT": {"SCF": updates}}}}


class Cp2kSCF(ErrorHandler):
    """``SCF run NOT converged`` or ``outer SCF loop FAILED to converge``.

    The SCF method is read from the output (``OT`` update steps) or the input. OT: (1) DIIS →
    CG minimiser (robust line search) with an outer SCF loop and twice the steps; (2) the
    ``FULL_ALL`` preconditioner with a smaller ``ENERGY_GAP``. Diagonalisation: (1) Broyden
    mixing with ``ALPHA 0.2``; (2) half the mixing with a longer history. ``MAX_SCF`` is raised
    to at least 100 (twice the old value) each time.
    """

    name = "scf_unconverged"
    kind: ClassVar[Kind] = "numerical"
    error_class = SCFError
    default_max_corrections = 3
    _pattern = re.compile(r"SCF run NOT converged|outer SCF loop FAILED to converge")

    def detect(self, directory: Path) -> bool:
        text = read_text(Path(directory) / OUTPUT)
        return self._pattern.search(text) is not None and _STOP_REQUESTED.search(text) is None

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        text = read_text(Path(directory) / OUTPUT)
        tree = _input(Path(directory))
        scf = _get(tree, "FORCE_EVAL", "DFT", "SCF") or {}
        ot_in_output = re.search(r"^\s+\d+\s+OT\s", text, re.MULTILINE) is not None
        uses_ot = ot_in_output or "OT" in scf
        m = re.search(r"max_scf:\s+(\d+)", text)
        max_scf = int(m.group(1)) if m else int(scf.get("MAX_SCF", 50))
        steps = max(2 * max_scf, 100)
        if uses_ot:
            ot = scf.get("OT") if isinstance(scf.get("OT"), Mapping) else {}
            minimizer = str(ot.get("MINIMIZER", "")).upper()
            if not minimizer and (mm := re.search(r"Minimizer\s*:\s*(\w+)", text)):
                minimizer = mm.group(1).upper()
            if minimizer in {"", "DIIS"}:
                eps = float(scf.get("EPS_SCF", 1e-6))
                updates: dict[str, Any] = {
                    "MAX_SCF": steps,
                    "OT": {"MINIMIZER": "CG", "LINESEARCH": "2PNT"},
                    "OUTER_SCF": {"MAX_SCF": 10, "EPS_SCF": eps},
                }
                what = "OT with the CG minimiser and an outer SCF loop"
            elif str(ot.get("PRECONDITIONER", "")).upper() != "FULL_ALL":
                updates = {
                    "MAX_SCF": steps,
                    "OT": {"PRECONDITIONER": "FULL_ALL", "ENERGY_GAP": 0.001},
                }
                what = "OT with the FULL_ALL preconditioner"
            else:
                raise NoCorrection("OT with CG and FULL_ALL did not converge: check the system")
        else:
            mixing = scf.get("MIXING") if isinstance(scf.get("MIXING"), Mapping) else {}
            method = str(mixing.get("METHOD", "")).upper()
            if not method and (mm := re.search(r"Mixing method:\s+(\S+)", text)):
                method = mm.group(1).upper()
            alpha = float(mixing.get("ALPHA", 0.4))
            if method != "BROYDEN_MIXING":
                updates = {
                    "MAX_SCF": steps,
                    "MIXING": {"METHOD": "BROYDEN_MIXING", "ALPHA": 0.2, "NBROYDEN": 8},
                }
                what = f"Broyden mixing (was {method or 'default'}) with ALPHA 0.2"
            elif alpha > 0.05:
                updates = {
                    "MAX_SCF": steps,
                    "MIXING": {"ALPHA": round(alpha / 2, 4), "NBROYDEN": 12},
                }
                what = f"Broyden mixing with ALPHA {round(alpha / 2, 4)}"
            else:
                raise NoCorrection(f"Broyden mixing with ALPHA {alpha} did not converge")
        return Correction(
            handler=self.name,
            description=f"SCF not converged within MAX_SCF {max_scf}: {what}, MAX_SCF {steps}",
            parameter_updates=_scf_path(updates),
        )


class Cp2kCholesky(ErrorHandler):
    """``Cholesky decomposition failed. Matrix ill conditioned?``.

    (1) Orthogonalise without the Cholesky factorisation of the overlap matrix
    (``&SCF CHOLESKY OFF``: a diagonalisation-based inverse square root, robust for nearly
    singular overlaps), and when the failure is in building the OT ``FULL_SINGLE_INVERSE``
    preconditioner (itself a Cholesky inversion) use ``FULL_ALL``; (2) start from atomic
    guesses (a bad restart wavefunction is a common cause) with tighter integrals
    (``EPS_DEFAULT 1e-12``). Beyond that the overlap matrix is singular (diffuse basis, atoms
    too close): no parameter fix.
    """

    name = "cholesky"
    kind: ClassVar[Kind] = "numerical"
    default_max_corrections = 2
    _pattern = re.compile(r"Cholesky decomposition failed|cp_fm_cholesky_decompose")

    def detect(self, directory: Path) -> bool:
        return self._pattern.search(read_text(Path(directory) / OUTPUT)) is not None

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        text = read_text(Path(directory) / OUTPUT)
        tree = _input(Path(directory))
        scf = _get(tree, "FORCE_EVAL", "DFT", "SCF") or {}
        ot = scf.get("OT") if isinstance(scf.get("OT"), Mapping) else None
        in_preconditioner = "make_preconditioner" in text or "make_full_inverse_cholesky" in text
        cholesky = str(scf.get("CHOLESKY", "")).upper()
        if cholesky != "OFF":
            updates: dict[str, Any] = {"CHOLESKY": "OFF"}
            what = "orthogonalise without Cholesky (SCF CHOLESKY OFF)"
            preconditioner = str((ot or {}).get("PRECONDITIONER", "FULL_SINGLE_INVERSE")).upper()
            if in_preconditioner and preconditioner == "FULL_SINGLE_INVERSE":
                updates["OT"] = {"PRECONDITIONER": "FULL_ALL"}
                what += " and the FULL_ALL preconditioner"
            return Correction(
                handler=self.name,
                description=f"Cholesky decomposition failed: {what}",
                parameter_updates=_scf_path(updates),
            )
        eps = _get(tree, "FORCE_EVAL", "DFT", "QS", "EPS_DEFAULT")
        guess = str(scf.get("SCF_GUESS", "")).upper()
        if guess != "ATOMIC" or eps is None or float(str(eps).replace("D", "E")) > 1e-12:
            return Correction(
                handler=self.name,
                description="Cholesky decomposition failed: restart from atomic guesses with "
                "EPS_DEFAULT 1e-12",
                parameter_updates={
                    "input": {
                        "FORCE_EVAL": {
                            "DFT": {"QS": {"EPS_DEFAULT": 1e-12}, "SCF": {"SCF_GUESS": "ATOMIC"}}
                        }
                    }
                },
            )
        raise NoCorrection(
            "overlap matrix ill conditioned with atomic guesses and EPS_DEFAULT 1e-12: the basis "
            "is linearly dependent (diffuse functions or atoms too close)"
        )


def _last_positions(directory: Path) -> Atoms | None:
    record = read_parameters_record(Path(directory))
    if record is None:
        return None
    initial = atoms_from_dict(record["parameters"]["input_structure"])
    frames = Cp2kTemplate._positions(Path(directory), initial)
    return frames[-1] if frames else None


class Cp2kGeoOpt(ErrorHandler):
    """``MAXIMUM NUMBER OF OPTIMIZATION STEPS REACHED``: restart from the last structure of
    ``cp2k-pos-1.xyz`` with twice ``MAX_ITER``."""

    name = "ionic_unconverged"
    kind: ClassVar[Kind] = "numerical"
    default_max_corrections = 3

    def detect(self, directory: Path) -> bool:
        return "MAXIMUM NUMBER OF OPTIMIZATION STEPS REACHED" in read_text(
            Path(directory) / OUTPUT
        )

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        structure = _last_positions(Path(directory))
        if structure is None:
            raise NoCorrection("no cp2k-pos-1.xyz to restart the optimisation from")
        steps = int(parameters.get("max_geo_steps", 200))
        return Correction(
            handler=self.name,
            description=f"geometry optimisation not converged in {steps} steps: restart from "
            f"the last structure with MAX_ITER {2 * steps}",
            parameter_updates={"max_geo_steps": 2 * steps},
            restart_structure=structure,
        )


class Cp2kInterrupted(Interrupted):
    """Timeout, walltime or killed process.

    After CP2K stopped by itself (``cp2k.EXIT`` written by the walltime monitor, CP2K's own
    ``WALLTIME``, or a user's ``EXIT`` file) its restart files are complete: the next attempt
    continues from this run's ``cp2k-RESTART.wfn`` (``parent_directory``) and, for a
    relaxation, from the last structure. After a kill the wavefunction file may be torn: a
    relaxation restarts from its last structure, a single point reruns.
    """

    def __init__(self, max_corrections: int | None = None) -> None:
        super().__init__(files=(OUTPUT,), markers=_STOP_REQUESTED,
                         max_corrections=max_corrections)

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        directory = Path(directory)
        structure = _last_positions(directory)
        wavefunction = directory / f"{PROJECT}-RESTART.wfn"
        if stopped_on_request(directory) and wavefunction.is_file():
            what = "continue from this run's wavefunction"
            if structure is not None:
                what += " and last structure"
            return self.base_correction(
                directory, what,
                parameter_updates={"parent_directory": str(directory.resolve())},
                restart_structure=structure,
            )
        if structure is not None:
            return self.base_correction(
                directory, "restart from the last structure", restart_structure=structure
            )
        return self.base_correction(directory, "rerun unchanged")


# ---------------------------------------------------------------------------------------------
# Input generator and registry entry (issue 11, "one home per program"): the protocols of a
# run and what the code registry knows of CP2K.
# ---------------------------------------------------------------------------------------------

class Cp2kInputs(InputGenerator):
    """CP2K protocols: plane-wave cutoffs of the multigrid (Ry) and SCF tolerance."""

    code: ClassVar[str] = "cp2k"
    levels: ClassVar[dict[str, Any]] = {
        "moderate": {"parameters": {"cutoff": 400, "rel_cutoff": 50, "eps_scf": 1.0e-7}},
        "fast": {"PARENT": "moderate", "parameters": {
            "cutoff": 280, "rel_cutoff": 40, "eps_scf": 1.0e-6}},
        "precise": {"PARENT": "moderate", "parameters": {
            "cutoff": 600, "rel_cutoff": 60, "eps_scf": 1.0e-8}},
    }


CODE = CodeInfo(
    "cp2k", frozenset({"static", "relax", "eos"}), program="cp2k", cell_relax=False,
    install_hint="apt-get install cp2k cp2k-data", template=Cp2kTemplate, inputs=Cp2kInputs(),
)
__all__ += ["CODE", "Cp2kInputs"]
