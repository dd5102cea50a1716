"""Quantum ESPRESSO ``pw.x``: inputs, pseudopotentials, output parser and error handlers.

Calculations: ``static`` (``scf``), ``relax``, ``vc-relax``, ``nscf`` and ``bands``.

Parameters (a dict, never modified) hold the namelists in lower case plus a few matdx keys::

    {
        "control": {...}, "system": {...}, "electrons": {...}, "ions": {...}, "cell": {...},
        "kpoints": {"density": 5.0}            # points per Å⁻¹ (2π included), the default
                 | {"grid": [4, 4, 4], "shift": [0, 0, 0]} | {"gamma": True}
                 | {"path": "GXWKGLUWLK", "npoints": 60}        # bands
                 | {"kpts": [[k1, k2, k3, w], ...]},            # fractional
        "pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"},          # optional, per element
        "functional": "PBE",                   # preferred functional of automatic pseudos
        "parent_directory": "/runs/scf-1",     # nscf, bands, restart_mode='restart'
    }

The template fills in what the structure determines (``ibrav=0``, ``nat``, ``ntyp``, species,
starting magnetisations from ``atoms.get_initial_magnetic_moments()``), writes
``tprnfor``/``tstress`` and ``verbosity='high'`` (all eigenvalues and occupations printed), and
picks defaults an expert would: ``ecutwfc``/``ecutrho`` from the cutoffs the pseudopotentials
suggest (``ecutrho`` 8×``ecutwfc`` for ultrasoft/PAW without a suggestion), and for fixed
occupations a few empty bands so the band gap can be computed. Chosen pseudopotentials are
copied into ``pseudo/`` in the run directory, so the directory holds everything the run needs.

Pseudopotential choice per element (deterministic): among the UPF files of the library whose
header names the element (Coulomb potentials excluded), prefer the requested functional (read
from the header, default PBE), then scalar-relativistic over spin-orbit files, then the file
name in sort order. All species must share one functional; if the requested one is missing for
some element the first functional available for all of them is used.

Output parsing reads ``pw.out`` (energies in Ry → eV, forces Ry/Bohr → eV/Å, stress
Ry/Bohr³ → eV/Å³ with the sign flipped to ASE's convention: QE prints positive stress under
compression). A ``pw.out`` without ``JOB DONE`` raises :class:`~matdx.codes.errors.ReadError`;
one that ends with a ``%%%%`` error box raises it with the routine and message.
"""

from __future__ import annotations

import functools
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms, FixCartesian
from ase.data import atomic_masses, atomic_numbers
from ase.units import Bohr, Ry

from matdx.codes.bandgap import gap_value
from matdx.codes.base import (
    Template,
    read_parameters_record,
    refusing_unsafe_values,
    write_parameters_record,
)
from matdx.codes.errors import InputError, PseudopotentialNotFound, ReadError
from matdx.codes.execution import Profile
from matdx.codes.handlers import ErrorHandler, read_text
from matdx.codes.inputs import InputGenerator
from matdx.codes.kpoints import bandpath_kpoints, kpoint_grid
from matdx.codes.monitors import Monitor, StopFileBeforeLimit, clean_stop_margin
from matdx.codes.registry import ALL_RECIPES, CodeInfo
from matdx.codes.results import CalculationResult, file_sha256
from matdx.codes.trajectory import Frames
from matdx.safety.text import check_keys, check_tree, check_word

__all__ = [
    "DEFAULT_PSEUDO_DIR",
    "EspressoTemplate",
    "PseudoInfo",
    "PwOutput",
    "kpoint_grid",
    "parse_pw_output",
    "read_upf",
    "select_pseudopotentials",
]

DEFAULT_PSEUDO_DIR = "/usr/share/espresso/pseudo"
INPUT, OUTPUT, ERROR = "pw.in", "pw.out", "pw.err"
PSEUDO_SUBDIR = "pseudo"

_CALCULATIONS = {
    "static": "scf",
    "relax": "relax",
    "vc-relax": "vc-relax",
    "nscf": "nscf",
    "bands": "bands",
}
_NAMELISTS = ("control", "system", "electrons", "ions", "cell")
_TOP_KEYS = frozenset(
    {*_NAMELISTS, "kpoints", "pseudopotentials", "functional", "parent_directory"}
)
# Namelist variable names: Fortran identifiers, with an index such as
# ``starting_magnetization(1)`` or ``Hubbard_U(2)``. String values are quoted with
# ``'`` doubled on writing, so a value cannot leave its field.
NAMELIST_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\([0-9, ]+\))?")
NAMELIST_KEY_RULE = "a Fortran name, optionally indexed as name(1)"
_OWNED = {"control": {"calculation"}, "system": {"ibrav", "nat", "ntyp", "celldm", "a"}}
_DEFAULT_DENSITY = 5.0

# --------------------------------------------------------------------------- pseudopotentials


@dataclass(frozen=True)
class PseudoInfo:
    """What the header of a UPF file says.

    Attributes
    ----------
    path : Path
    element : str
    functional : str
        Normalised family: ``"PBE"``, ``"PBEsol"``, ``"LDA"``, ``"BLYP"``, ``"TPSS"`` or the
        raw header text.
    kind : str
        ``"NC"``, ``"US"`` or ``"PAW"``.
    spin_orbit : bool
        Fully relativistic file (meant for ``lspinorb``).
    coulomb : bool
        A bare Coulomb potential (never chosen automatically).
    z_valence : float
        Valence electrons.
    wfc_cutoff, rho_cutoff : float or None
        Suggested minimum cutoffs, Ry.
    """

    path: Path
    element: str
    functional: str
    kind: str
    spin_orbit: bool
    coulomb: bool
    z_valence: float
    wfc_cutoff: float | None
    rho_cutoff: float | None

    @property
    def name(self) -> str:
        return self.path.name


def _functional_family(text: str) -> str:
    tokens = set(re.split(r"[\s\-_]+", text.upper().strip()))
    if "PBESOL" in tokens or {"PSX", "PSC"} <= tokens:
        return "PBEsol"
    if tokens & {"TPSS", "SCAN", "R2SCAN"}:
        return next(t for t in ("TPSS", "SCAN", "R2SCAN") if t in tokens)
    if "BLYP" in tokens or {"B88", "LYP"} <= tokens:
        return "BLYP"
    if tokens & {"PBE", "PBX", "PBC"}:
        return "PBE"
    if tokens & {"PZ", "LDA", "NOGX", "NOGC"} or tokens == {"SLA", "PW"}:
        return "LDA"
    return text.strip()


def _float(text: str) -> float:
    return float(text.strip().replace("D", "E").replace("d", "e"))


def _parse_upf(path: Path) -> PseudoInfo | None:
    text = path.read_text(errors="replace")
    suggested = [
        value
        for m in re.finditer(r"Suggested minimum cutoff for \w+ ?\w*:\s*([\d.]+)", text)
        if (value := _float(m.group(1))) > 0
    ]
    v2 = re.search(r"<PP_HEADER\b([^>]*?)/?>", text, re.DOTALL)
    if v2 and "=" in v2.group(1):
        attrs = {
            k.lower(): (double or single).strip()
            for k, double, single in re.findall(
                r"(\w+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')", v2.group(1)
            )
        }
        if "element" not in attrs:
            return None
        flag = {"t", "true", ".true."}
        pseudo_type = attrs.get("pseudo_type", "NC").upper()
        if attrs.get("is_paw", "").lower() in flag or pseudo_type == "PAW":
            kind = "PAW"
        elif attrs.get("is_ultrasoft", "").lower() in flag or pseudo_type in {"US", "USPP"}:
            kind = "US"
        else:
            kind = "NC"
        cut = [float(attrs.get(k) or 0.0) for k in ("wfc_cutoff", "rho_cutoff")]
        return PseudoInfo(
            path=path,
            element=attrs["element"].strip().capitalize(),
            functional=_functional_family(attrs.get("functional", "")),
            kind=kind,
            spin_orbit=attrs.get("has_so", "").lower() in flag
            or attrs.get("relativistic", "").lower() == "full",
            coulomb=attrs.get("is_coulomb", "").lower() in flag or pseudo_type == "1/R",
            z_valence=float(attrs.get("z_valence", "0") or 0.0),
            wfc_cutoff=suggested[0] if suggested else (cut[0] if cut[0] > 0 else None),
            rho_cutoff=suggested[1] if len(suggested) > 1 else None,
        )
    v1 = re.search(r"<PP_HEADER>(.*?)</PP_HEADER>", text, re.DOTALL)
    if not v1:
        return None
    lines = [line.split() for line in v1.group(1).strip().splitlines()]
    try:
        element = lines[1][0].capitalize()
        kind = {"NC": "NC", "SL": "NC", "US": "US", "PAW": "PAW"}.get(lines[2][0].upper(), "NC")
        functional = _functional_family(" ".join(lines[4][:4]))
        z_valence = _float(lines[5][0])
        wfc, rho = _float(lines[7][0]), _float(lines[7][1])
    except (IndexError, ValueError):
        return None
    return PseudoInfo(
        path=path,
        element=element,
        functional=functional,
        kind=kind,
        spin_orbit="<PP_ADDINFO>" in text or f"{element.lower()}.rel-" in path.name.lower(),
        coulomb="coulomb" in path.name.lower(),
        z_valence=z_valence,
        wfc_cutoff=suggested[0] if suggested else (wfc if wfc > 0 else None),
        rho_cutoff=suggested[1] if len(suggested) > 1 else (rho if rho > 0 else None),
    )


@functools.lru_cache(maxsize=1024)
def _cached_upf(path: str, mtime_ns: int, size: int) -> PseudoInfo | None:
    return _parse_upf(Path(path))


def read_upf(path: str | Path) -> PseudoInfo | None:
    """Header information of a UPF (v1 or v2) file, or None if it is not one."""
    path = Path(path)
    stat = path.stat()
    return _cached_upf(str(path), stat.st_mtime_ns, stat.st_size)


def _library(directory: Path) -> list[PseudoInfo]:
    if not directory.is_dir():
        raise InputError(f"pseudopotential directory {str(directory)!r} does not exist")
    found = []
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix.lower() == ".upf":
            info = read_upf(path)
            if info is not None and not info.coulomb:
                found.append(info)
    return found


def select_pseudopotentials(
    elements: Sequence[str],
    directory: str | Path = DEFAULT_PSEUDO_DIR,
    functional: str = "PBE",
    explicit: Mapping[str, str] | None = None,
) -> dict[str, PseudoInfo]:
    """Choose one UPF file per element, deterministically.

    Parameters
    ----------
    elements
        Chemical symbols.
    directory
        The pseudopotential library.
    functional
        Preferred functional family (``"PBE"``, ``"PBEsol"``, ``"LDA"``…).
    explicit
        Element → file name (in ``directory``) or absolute path; these win.

    Returns
    -------
    dict
        Element → :class:`PseudoInfo`.

    Raises
    ------
    PseudopotentialNotFound
        If an element has no file (or its explicit file does not exist).
    InputError
        If the chosen files cannot share one functional.
    """
    directory = Path(directory)
    explicit = dict(explicit or {})
    chosen: dict[str, PseudoInfo] = {}
    for element, name in explicit.items():
        path = Path(name) if Path(name).is_absolute() else directory / name
        info = read_upf(path) if path.is_file() else None
        if info is None:
            raise PseudopotentialNotFound(element, directory, f"file {name!r} is not a UPF file")
        chosen[element] = info
    wanted = sorted(set(elements) - set(chosen))
    if not wanted:
        return {e: chosen[e] for e in elements}
    library = _library(directory)
    by_element = {e: [p for p in library if p.element == e] for e in wanted}
    for element, candidates in by_element.items():
        if not candidates:
            raise PseudopotentialNotFound(
                element, directory, "no *.UPF file whose header names this element"
            )
    fixed = {p.functional for p in chosen.values()}
    available = set.intersection(*({p.functional for p in c} for c in by_element.values()))
    order = [functional, "PBE", "PBEsol", "LDA", *sorted(available)]
    options = [f for f in dict.fromkeys(order) if f in available and (not fixed or {f} == fixed)]
    if not options:
        detail = {e: sorted({p.functional for p in c}) for e, c in by_element.items()}
        raise InputError(
            f"pseudopotentials: no functional is available for all of {wanted} "
            f"(available per element: {detail}; explicit: {sorted(fixed)}); "
            "name compatible files in parameters['pseudopotentials']"
        )
    family = options[0]
    for element, candidates in by_element.items():
        matching = [p for p in candidates if p.functional == family]
        chosen[element] = min(matching, key=lambda p: (p.spin_orbit, p.name))
    return {e: chosen[e] for e in elements}


# --------------------------------------------------------------------------- input writing


def _fortran(value: Any) -> str:
    if isinstance(value, bool):
        return ".true." if value else ".false."
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return repr(float(value)).replace("e", "d")
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise InputError(f"namelist value {value!r}: expected bool, int, float or str")


def _namelist(name: str, values: Mapping[str, Any], labels: Sequence[str]) -> str:
    lines = [f"&{name.upper()}"]
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, Mapping):  # indexed by species label or 1-based index
            for index, item in value.items():
                i = labels.index(index) + 1 if index in labels else int(index)
                if item is not None:
                    lines.append(f"  {key}({i}) = {_fortran(item)}")
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value, start=1):
                if item is not None:
                    lines.append(f"  {key}({i}) = {_fortran(item)}")
        else:
            lines.append(f"  {key} = {_fortran(value)}")
    lines.append("/")
    return "\n".join(lines)


def _species(atoms: Atoms) -> tuple[list[str], list[tuple[str, str, float]]]:
    """Species label per atom and (label, element, initial moment) per species.

    Atoms of one element with different initial magnetic moments (e.g. antiferromagnets)
    become separate species ``Fe``, ``Fe1``, ``Fe2``…
    """
    moments = np.round(atoms.get_initial_magnetic_moments(), 6)
    groups: dict[tuple[str, float], str] = {}
    counters: dict[str, int] = {}
    labels = []
    for symbol, moment in zip(atoms.get_chemical_symbols(), moments, strict=True):
        key = (symbol, float(moment))
        if key not in groups:
            n = counters.get(symbol, 0)
            if n > 9:
                raise InputError(
                    f"atoms: more than 10 distinct initial magnetic moments for {symbol}; "
                    "QE species labels allow at most Fe, Fe1 … Fe9"
                )
            groups[key] = symbol if n == 0 else f"{symbol}{n}"
            counters[symbol] = n + 1
        labels.append(groups[key])
    table = [(label, symbol, moment) for (symbol, moment), label in groups.items()]
    return labels, table


def _position_flags(atoms: Atoms) -> np.ndarray:
    """(n_atoms, 3) 1 = free, 0 = fixed, from FixAtoms / FixCartesian constraints."""
    flags = np.ones((len(atoms), 3), dtype=int)
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            flags[constraint.index] = 0
        elif isinstance(constraint, FixCartesian):
            flags[constraint.index] = np.where(constraint.mask, 0, flags[constraint.index])
        else:
            raise InputError(
                f"atoms.constraints: {type(constraint).__name__} cannot be written for pw.x; "
                "accepted: FixAtoms, FixCartesian"
            )
    return flags


def _resolve_kpoints(
    spec: Mapping[str, Any], atoms: Atoms, calculation: str
) -> tuple[str, dict[str, Any]]:
    """The K_POINTS card and the resolved k-point record."""
    keys = set(spec)
    if keys <= {"density", "shift"} and "density" in spec:
        grid = kpoint_grid(atoms.cell, float(spec["density"]), atoms.pbc)
        spec = {"grid": list(grid), "shift": spec.get("shift", [0, 0, 0]), **spec}
        keys = set(spec)
    if "grid" in keys:
        grid = [int(n) for n in spec["grid"]]
        shift = [int(s) for s in spec.get("shift", [0, 0, 0])]
        if len(grid) != 3 or min(grid) < 1 or len(shift) != 3 or set(shift) - {0, 1}:
            raise InputError(
                f"kpoints: grid {spec['grid']!r} / shift {spec.get('shift')!r}; expected three "
                "positive integers and three 0/1 shifts"
            )
        card = "K_POINTS automatic\n" + " ".join(map(str, grid + shift))
        return card, {**spec, "grid": grid, "shift": shift}
    if spec.get("gamma"):
        return "K_POINTS gamma", {"gamma": True}
    if "path" in keys or "npoints" in keys:
        npoints = int(spec.get("npoints", 60))
        kpts, path, special = bandpath_kpoints(atoms, spec.get("path"), npoints)
        rows = "\n".join(f"{k[0]:.10f} {k[1]:.10f} {k[2]:.10f} 1" for k in kpts)
        record = {"path": path, "npoints": len(kpts), "special_points": special}
        return f"K_POINTS crystal\n{len(kpts)}\n{rows}", record
    if "kpts" in keys:
        kpts = np.asarray(spec["kpts"], dtype=float)
        if kpts.ndim != 2 or kpts.shape[1] != 4:
            raise InputError(f"kpoints.kpts: expected rows [k1, k2, k3, weight], got {kpts.shape}")
        rows = "\n".join(" ".join(f"{x:.10f}" for x in k) for k in kpts)
        return f"K_POINTS crystal\n{len(kpts)}\n{rows}", {"kpts": kpts.tolist()}
    raise InputError(
        f"kpoints: {dict(spec)!r}; accepted: {{'density'}}, {{'grid', 'shift'}}, {{'gamma'}}, "
        f"{{'path', 'npoints'}} (bands), {{'kpts'}}; calculation={calculation!r}"
    )


def _default_bands(n_electrons: float) -> int:
    """pw.x's default band count for metals: max(1.2 N/2, N/2 + 4)."""
    half = n_electrons / 2.0
    return max(math.ceil(1.2 * half), math.ceil(half) + 4)


class EspressoTemplate(Template):
    """Quantum ESPRESSO ``pw.x`` (tested with 6.7MaX from Debian).

    Files: ``pw.in`` (input), ``pw.out``/``pw.err`` (stdout/stderr), ``out/`` (``outdir``),
    ``pseudo/`` (copies of the chosen UPF files), ``parameters.json``.
    """

    name = "espresso"
    calculations: ClassVar[frozenset[str]] = frozenset(_CALCULATIONS)
    stdout = OUTPUT
    stderr = ERROR
    default_binary: ClassVar[tuple[str, ...]] = ("pw.x",)
    install_hint = "apt-get install quantum-espresso quantum-espresso-data"

    def default_handlers(self) -> tuple[ErrorHandler, ...]:
        """The recovery catalogue of :mod:`matdx.codes.espresso_handlers`."""
        from matdx.codes.espresso_handlers import espresso_handlers

        return espresso_handlers()

    def monitors(
        self,
        directory: Path,
        parameters: Mapping[str, Any],
        timeout_s: float | None,
        stall_s: float | None,
    ) -> list[Monitor]:
        """The template's monitors (frozen output, :meth:`clean_stop`) and
        :class:`~matdx.codes.espresso_handlers.ScfDiverging`."""
        from matdx.codes.espresso_handlers import ScfDiverging

        return [*super().monitors(directory, parameters, timeout_s, stall_s), ScfDiverging()]

    def clean_stop(self, directory: Path, timeout_s: float) -> Monitor | None:
        """With a time limit of 10 s or more, ``PREFIX.EXIT`` written 10 % of it (3 s to
        10 min) before it ends: pw.x then saves its restart files and stops by itself. Shorter
        limits leave no time for that; the run is killed at the limit."""
        if timeout_s < 10.0:
            return None
        written = (read_parameters_record(directory) or {}).get("parameters") or {}
        prefix = (written.get("control") or {}).get("prefix", "pwscf")
        return StopFileBeforeLimit(timeout_s, clean_stop_margin(timeout_s), f"{prefix}.EXIT")

    def arguments(self) -> list[str]:
        return ["-in", INPUT]

    def environment(self) -> dict[str, str]:
        # pw.x aborts through MPI_Abort: without this gfortran loses the buffered error box.
        return {"GFORTRAN_UNBUFFERED_PRECONNECTED": "y"}

    def profile(self, **kwargs: Any) -> Profile:
        kwargs.setdefault("pseudo_dir", DEFAULT_PSEUDO_DIR)
        return super().profile(**kwargs)

    def write_input(
        self,
        directory: Path,
        atoms: Atoms,
        parameters: Mapping[str, Any],
        calculation: str,
        *,
        profile: Profile | None = None,
    ) -> None:
        """Write ``pw.in``, copy pseudopotentials (and the parent's ``outdir``).

        Raises
        ------
        InputError
            Unknown keys, template-owned keys set by the user, missing cutoffs, bad k-points,
            unsupported constraints, or nscf/bands without ``parent_directory``.
        PseudopotentialNotFound
            If an element has no pseudopotential.
        """
        self.check_calculation(calculation)
        directory = Path(directory)
        unknown = sorted(set(parameters) - _TOP_KEYS)
        if unknown:
            raise InputError(f"parameters: unknown keys {unknown}; accepted: {sorted(_TOP_KEYS)}")
        with refusing_unsafe_values():
            check_tree(dict(parameters), "parameters")
            for name in _NAMELISTS:
                check_keys(dict(parameters.get(name) or {}), f"parameters.{name}",
                           NAMELIST_KEY, NAMELIST_KEY_RULE)
            for element, name in dict(parameters.get("pseudopotentials") or {}).items():
                check_word(name, f"parameters.pseudopotentials.{element}")
        lists = {name: dict(parameters.get(name) or {}) for name in _NAMELISTS}
        for name, owned in _OWNED.items():
            clash = sorted(owned & set(lists[name]))
            if clash:
                raise InputError(
                    f"parameters[{name!r}]: {clash} are set by the template from the structure "
                    "and the calculation type; remove them"
                )
        if len(atoms) == 0:
            raise InputError("atoms: empty structure")
        if not all(atoms.pbc):
            raise InputError(f"atoms.pbc={atoms.pbc.tolist()}: pw.x needs a periodic cell")

        pseudo_dir = Path(
            (profile.pseudo_dir if profile is not None else None) or DEFAULT_PSEUDO_DIR
        )
        labels, species = _species(atoms)
        elements = list(dict.fromkeys(atoms.get_chemical_symbols()))
        pseudos = select_pseudopotentials(
            elements,
            pseudo_dir,
            functional=str(parameters.get("functional", "PBE")),
            explicit=parameters.get("pseudopotentials"),
        )

        control, system, electrons = lists["control"], lists["system"], lists["electrons"]
        parent = parameters.get("parent_directory")
        parent_outdir = self._parent_outdir(Path(parent), control) if parent else None
        if calculation in {"nscf", "bands"} and parent_outdir is None:
            raise InputError(
                f"calculation={calculation!r} needs parameters['parent_directory']: the run "
                "directory of the SCF whose charge density it uses"
            )
        control = {
            "calculation": _CALCULATIONS[calculation],
            "prefix": "pwscf",
            "outdir": "./out",
            "verbosity": "high",
            "tprnfor": True,
            "tstress": True,
            **control,
            "pseudo_dir": f"./{PSEUDO_SUBDIR}",
        }
        n_electrons = sum(
            pseudos[s].z_valence for s in atoms.get_chemical_symbols()
        ) - float(system.get("tot_charge", 0.0) or 0.0)
        if system.get("ecutwfc") is None:
            suggested = [p.wfc_cutoff for p in pseudos.values()]
            if None in suggested:
                raise InputError(
                    "parameters['system']['ecutwfc'] is required: the pseudopotentials "
                    f"{sorted(p.name for p in pseudos.values() if p.wfc_cutoff is None)} "
                    "suggest no cutoff"
                )
            system["ecutwfc"] = float(max(s for s in suggested if s is not None))
        ecutwfc = float(system["ecutwfc"])
        if system.get("ecutrho") is None:
            rho = [p.rho_cutoff for p in pseudos.values() if p.rho_cutoff]
            hard = any(p.kind in {"US", "PAW"} for p in pseudos.values())
            factor = 8.0 if hard else 4.0
            system["ecutrho"] = float(max([factor * ecutwfc, *rho])) if (rho or hard) else None
        moments = {label: moment for label, _, moment in species}
        if any(moments.values()) and system.get("nspin") is None:
            system["nspin"] = 2
        if system.get("nspin") == 2 and system.get("starting_magnetization") is None:
            system["starting_magnetization"] = {
                label: float(np.clip(moment / max(pseudos[element].z_valence, 1e-9), -1, 1))
                for label, element, moment in species
            }
        occupations = system.get("occupations", "fixed")
        if (
            occupations == "fixed"
            and system.get("nbnd") is None
            and calculation in {"static", "nscf", "bands"}
        ):
            system["nbnd"] = _default_bands(n_electrons)
        system = {"ibrav": 0, "nat": len(atoms), "ntyp": len(species), **system}

        default_k = {"path": None} if calculation == "bands" else {"density": _DEFAULT_DENSITY}
        card_k, kpoints = _resolve_kpoints(
            parameters.get("kpoints") or default_k, atoms, calculation
        )
        blocks = [
            _namelist("control", control, [s[0] for s in species]),
            _namelist("system", system, [s[0] for s in species]),
            _namelist("electrons", electrons, [s[0] for s in species]),
        ]
        if calculation in {"relax", "vc-relax"}:
            blocks.append(_namelist("ions", lists["ions"], [s[0] for s in species]))
        if calculation == "vc-relax":
            blocks.append(_namelist("cell", lists["cell"], [s[0] for s in species]))

        (directory / PSEUDO_SUBDIR).mkdir(exist_ok=True)
        species_record = []
        rows = []
        for label, element, moment in species:
            info = pseudos[element]
            target = directory / PSEUDO_SUBDIR / info.name
            if not target.exists():
                shutil.copyfile(info.path, target)
            mass = float(atomic_masses[atomic_numbers[element]])
            rows.append(f"{label} {mass:.6f} {info.name}")
            species_record.append(
                {
                    "label": label,
                    "element": element,
                    "mass": mass,
                    "pseudopotential": info.name,
                    "functional": info.functional,
                    "z_valence": info.z_valence,
                    "initial_magnetic_moment": moment,
                }
            )
        flags = _position_flags(atoms)
        fixed = calculation in {"relax", "vc-relax"} and not flags.all()
        positions = []
        for label, position, flag in zip(labels, atoms.positions, flags, strict=True):
            row = f"{label} {position[0]:.10f} {position[1]:.10f} {position[2]:.10f}"
            positions.append(row + (" {} {} {}".format(*flag) if fixed else ""))
        cell = "\n".join(f"{v[0]:.10f} {v[1]:.10f} {v[2]:.10f}" for v in atoms.cell.array)
        text = "\n".join(
            [
                *blocks,
                "ATOMIC_SPECIES\n" + "\n".join(rows),
                "CELL_PARAMETERS angstrom\n" + cell,
                "ATOMIC_POSITIONS angstrom\n" + "\n".join(positions),
                card_k,
                "",
            ]
        )
        if parent_outdir is not None:
            target = directory / str(control["outdir"])
            if not target.exists():
                shutil.copytree(parent_outdir, target)
        (directory / INPUT).write_text(text)
        resolved: dict[str, Any] = {
            "control": control,
            "system": system,
            "electrons": electrons,
            "kpoints": kpoints,
            "functional": str(parameters.get("functional", "PBE")),
            "pseudopotentials": {e: p.name for e, p in pseudos.items()},
            "species": species_record,
            "n_electrons": n_electrons,
        }
        if calculation in {"relax", "vc-relax"}:
            resolved["ions"] = lists["ions"]
        if calculation == "vc-relax":
            resolved["cell"] = lists["cell"]
        if parent:
            resolved["parent_directory"] = str(parent)
        write_parameters_record(directory, self.name, calculation, resolved)

    @staticmethod
    def _parent_outdir(parent: Path, control: dict[str, Any]) -> Path:
        """The parent's ``outdir``; adopts its prefix and outdir unless set in ``control``."""
        record = read_parameters_record(parent)
        if record is None:
            raise InputError(
                f"parameters['parent_directory']={str(parent)!r} holds no parameters.json "
                "of a pw.x run"
            )
        parent_control = record["parameters"].get("control", {})
        outdir = str(parent_control.get("outdir", "./out"))
        source = parent / outdir
        if not source.is_dir():
            raise InputError(
                f"parameters['parent_directory']: {str(source)!r} (the parent's outdir) "
                "does not exist"
            )
        control.setdefault("prefix", parent_control.get("prefix", "pwscf"))
        control.setdefault("outdir", outdir)
        return source

    def read_results(self, directory: Path) -> CalculationResult:
        """Parse ``pw.out`` (and ``parameters.json``).

        Raises
        ------
        ReadError
            ``pw.out`` missing, truncated (no ``JOB DONE``), or ending with an error box.
        """
        directory = Path(directory)
        path = directory / OUTPUT
        if not path.is_file():
            raise ReadError(directory, f"{OUTPUT} is missing", path=path)
        out = parse_pw_output(path.read_text(errors="replace"))
        if out.error is not None:
            raise ReadError(
                directory, f"pw.x stopped with an error: {out.error}", kind="input", path=path
            )
        if not out.job_done:
            raise ReadError(directory, f"{OUTPUT} is truncated: no 'JOB DONE'", path=path)
        record = read_parameters_record(directory) or {}
        parameters = record.get("parameters", {})
        calculation = record.get("calculation", "static")
        if not out.geometries:
            raise ReadError(directory, f"{OUTPUT} holds no structure", path=path)
        structure = out.geometries[-1]
        last = out.steps[-1] if out.steps else None
        relaxing = calculation in {"relax", "vc-relax"}
        scf_converged = None if calculation in {"nscf", "bands"} else bool(
            last is not None and last.scf_converged
        )
        ionic_converged = (
            out.ionic_converged and not out.max_steps_reached and not out.bfgs_history_failed
        ) if relaxing else None
        converged = (
            scf_converged is not False
            and ionic_converged is not False
            and not out.cpu_time_exceeded
        )
        n_atoms = len(structure)
        energy = forces = stress = None
        if last is not None and last.energy is not None:
            energy = last.energy * Ry
            if last.forces is not None and len(last.forces) == n_atoms:
                forces = last.forces * Ry / Bohr
            if last.stress is not None:
                stress = -last.stress * Ry / Bohr**3
        fermi = out.fermi_energy if out.fermi_energy is not None else out.homo
        parent_dir = parameters.get("parent_directory")
        if fermi is None and calculation in {"nscf", "bands"} and parent_dir:
            parent = read_text(Path(parent_dir) / OUTPUT)
            if parent:
                parent_out = parse_pw_output(parent)
                fermi = parent_out.fermi_energy if parent_out.fermi_energy is not None else (
                    parent_out.homo
                )
        eigenvalues = occupations = kpoints = kweights = None
        if out.eigenvalues is not None:
            eigenvalues = out.eigenvalues
            occupations = out.occupations
            kpoints, kweights = out.kpoints_fractional(), out.kweights
        gap = None
        if out.homo is not None and out.lumo is not None:
            gap = max(0.0, out.lumo - out.homo)
        elif eigenvalues is not None:
            gap = gap_value(eigenvalues, fermi, occupations)
        pseudos = []
        for item in parameters.get("species", []):
            file = directory / PSEUDO_SUBDIR / item["pseudopotential"]
            entry = {
                "element": item["element"],
                "name": item["pseudopotential"],
                "sha256": file_sha256(file) if file.is_file() else None,
                "functional": item.get("functional"),
            }
            if entry not in pseudos:
                pseudos.append(entry)
        frames = out.frames() if relaxing and out.steps else None
        return CalculationResult(
            code=self.name,
            code_version=out.version,
            calculation=calculation,
            structure=structure,
            converged=bool(converged),
            scf_converged=scf_converged,
            ionic_converged=ionic_converged,
            energy=energy,
            forces=forces,
            stress=stress,
            fermi_level=fermi,
            band_gap=gap,
            eigenvalues=eigenvalues,
            occupations=occupations,
            kpoints=kpoints,
            kweights=kweights,
            magnetic_moments=out.site_moments,
            total_magnetization=out.total_magnetization,
            n_scf_steps=sum(s.iterations or 0 for s in out.steps) if out.steps else None,
            n_ionic_steps=len(out.steps) if relaxing else None,
            walltime_s=out.walltime_s,
            pseudopotentials=pseudos,
            parameters=parameters,
            warnings=out.warnings,
            frames=frames,
        )


# --------------------------------------------------------------------------- output parsing

_NUMBER = re.compile(r"-?\d+\.\d*(?:[eEdD][-+]?\d+)?")
_NUMERIC_LINE = re.compile(r"[\s\d.eE+\-]+")
_TAU = re.compile(r"\s*\d+\s+(\S+)\s+tau\(\s*\d+\)\s*=\s*\((.*)\)")
_POSITION = re.compile(r"\s*([A-Za-z]\w*)\s+(\S+)\s+(\S+)\s+(\S+)")
_HOMO_LUMO = re.compile(r"highest occupied, lowest unoccupied level \(ev\):\s+(\S+)\s+(\S+)")
_SITE_MOMENT = re.compile(r"atom:\s*\d+\s+charge:\s*\S+\s+magn:\s*(\S+)")


def _numbers(text: str) -> list[float]:
    return [_float(x) for x in _NUMBER.findall(text)]


@dataclass
class PwStep:
    """One SCF cycle of a pw.x run (Rydberg atomic units, as printed)."""

    energy: float | None = None  # Ry
    forces: np.ndarray | None = None  # Ry/Bohr
    stress: np.ndarray | None = None  # Ry/Bohr³, QE sign
    iterations: int | None = None
    scf_converged: bool = False


@dataclass
class PwOutput:
    """What :func:`parse_pw_output` found; energies of eigenvalues in eV, lengths in Å."""

    version: str | None = None
    steps: list[PwStep] = field(default_factory=list)
    geometries: list[Atoms] = field(default_factory=list)
    kpoints_cart: np.ndarray | None = None  # (n_k, 3) in 2π/alat
    kweights: np.ndarray | None = None
    alat: float | None = None  # Å
    header_cell: np.ndarray | None = None  # Å
    eigenvalues: np.ndarray | None = None
    occupations: np.ndarray | None = None
    fermi_energy: float | None = None
    homo: float | None = None
    lumo: float | None = None
    total_magnetization: float | None = None
    site_moments: np.ndarray | None = None
    n_electrons: float | None = None
    job_done: bool = False
    error: str | None = None
    cpu_time_exceeded: bool = False
    max_steps_reached: bool = False
    ionic_converged: bool = False
    bfgs_history_failed: bool = False
    walltime_s: float | None = None
    warnings: list[str] = field(default_factory=list)

    def kpoints_fractional(self) -> np.ndarray | None:
        """k-points in fractional coordinates of the reciprocal lattice."""
        if self.kpoints_cart is None or self.alat is None or self.header_cell is None:
            return None
        return self.kpoints_cart @ self.header_cell.T / self.alat

    def frames(self) -> Frames | None:
        """Per-step frames: geometry at which each energy was computed."""
        steps = [s for s in self.steps if s.energy is not None]
        if not steps:
            return None
        geometries = self.geometries[: len(self.steps)]
        if len(geometries) < len(self.steps):
            return None
        keep = [i for i, s in enumerate(self.steps) if s.energy is not None]
        n_atoms = len(geometries[0])
        forces = [self.steps[i].forces for i in keep]
        have_forces = all(f is not None and len(f) == n_atoms for f in forces)
        return Frames(
            positions=np.array([geometries[i].positions for i in keep]),
            cells=np.array([geometries[i].cell.array for i in keep]),
            times=np.array(keep, dtype=float),
            steps=np.array(keep, dtype=np.int64),
            velocities=None,
            forces=np.array(forces) * Ry / Bohr if have_forces else None,
            observables={
                "potential_energy": np.array([self.steps[i].energy for i in keep]) * Ry
            },
        )


def _walltime(text: str) -> float | None:
    seconds = 0.0
    found = False
    for value, unit in re.findall(r"([\d.]+)\s*([hms])", text):
        seconds += float(value) * {"h": 3600.0, "m": 60.0, "s": 1.0}[unit]
        found = True
    return seconds if found else None


def _element(label: str) -> str:
    letters = re.match(r"[A-Za-z]+", label)
    if not letters:
        raise ValueError(f"species label {label!r}")
    name = letters.group(0).capitalize()
    return name if name in atomic_numbers else name[0]


def parse_pw_output(text: str) -> PwOutput:
    """Parse the text of a ``pw.x`` output (complete or truncated).

    Returns every SCF cycle (energy, forces, stress, iterations), every structure printed
    (the initial one, then each ``ATOMIC_POSITIONS``/``CELL_PARAMETERS`` block), the last
    band-structure section (eigenvalues and occupations, eV), Fermi level or highest occupied /
    lowest unoccupied levels, magnetisation, the error box if any and the completion markers.
    Never raises on a truncated text; callers decide what is missing.
    """
    out = PwOutput()
    lines = text.splitlines()
    n = len(lines)
    alat_bohr: float | None = None
    header_cell: np.ndarray | None = None  # Å
    cell: np.ndarray | None = None  # Å, current
    labels: list[str] = []
    step: PwStep | None = None
    i = 0
    while i < n:
        line = lines[i]
        stripped = line.strip()
        if out.version is None and (m := re.search(r"Program PWSCF v\.(\S+)", line)):
            out.version = m.group(1)
        elif m := re.search(r"lattice parameter \(alat\)\s*=\s*([\d.]+)\s*a\.u\.", line):
            alat_bohr = float(m.group(1))
            out.alat = alat_bohr * Bohr
        elif m := re.search(r"number of electrons\s*=\s*([\d.]+)", line):
            out.n_electrons = float(m.group(1))
        elif "crystal axes: (cart. coord. in units of alat)" in line and alat_bohr:
            rows = [_numbers(lines[i + k].split("=", 1)[1]) for k in (1, 2, 3)]
            header_cell = np.array(rows) * alat_bohr * Bohr
            out.header_cell = header_cell
            cell = header_cell
            i += 3
        elif "site n." in line and "positions (alat units)" in line and alat_bohr:
            labels, positions = [], []
            j = i + 1
            while j < n and (m := _TAU.match(lines[j])):
                labels.append(m.group(1))
                positions.append(_numbers(m.group(2)))
                j += 1
            if header_cell is not None and labels:
                atoms = Atoms(
                    [_element(x) for x in labels],
                    positions=np.array(positions) * alat_bohr * Bohr,
                    cell=header_cell,
                    pbc=True,
                )
                if not out.geometries:
                    out.geometries.append(atoms)
            i = j - 1
        elif m := re.match(r"\s*number of k points=\s*(\d+)", line):
            count = int(m.group(1))
            ks, ws = [], []
            j = i + 1
            while j < n and len(ks) < count:
                km = re.match(r"\s*k\(\s*\d+\) = \((.*)\), wk =\s*(\S+)", lines[j])
                if km:
                    ks.append(_numbers(km.group(1)))
                    ws.append(_float(km.group(2)))
                elif ks:
                    break
                j += 1
            if len(ks) == count and count:
                weights = np.array(ws)
                out.kpoints_cart = np.array(ks)
                out.kweights = weights / weights.sum() if weights.sum() > 0 else weights
            i = j - 1
        elif "Self-consistent Calculation" in line:
            step = PwStep()
            out.steps.append(step)
        elif m := re.search(r"convergence has been achieved in\s+(\d+)\s+iterations", line):
            if step is not None:
                step.iterations, step.scf_converged = int(m.group(1)), True
        elif m := re.search(r"convergence NOT achieved after\s+(\d+)\s+iterations", line):
            if step is not None:
                step.iterations, step.scf_converged = int(m.group(1)), False
        elif stripped.startswith("!") and "total energy" in line:
            if step is not None:
                step.energy = _numbers(line)[0]
        elif "Forces acting on atoms" in line:
            forces = []
            j = i + 1
            while j < n:
                fm = re.match(r"\s*atom\s+\d+\s+type\s+\d+\s+force =(.*)", lines[j])
                if fm:
                    forces.append(_numbers(fm.group(1))[:3])
                elif forces:
                    break
                j += 1
            if step is not None and forces:
                step.forces = np.array(forces)
            i = j - 1
        elif "total   stress" in line and "Ry/bohr**3" in line:
            rows = [_numbers(lines[i + k])[:3] for k in (1, 2, 3)]
            if step is not None and all(len(r) == 3 for r in rows):
                step.stress = np.array(rows)
            i += 3
        elif m := re.match(r"\s*CELL_PARAMETERS\s*\((\w+)(?:=\s*([\d.]+))?\)", line):
            rows = [_numbers(lines[i + k]) for k in (1, 2, 3)]
            scale = {"angstrom": 1.0, "bohr": Bohr}.get(m.group(1).lower())
            if scale is None:  # (alat= X)
                scale = float(m.group(2)) * Bohr if m.group(2) else (out.alat or 1.0)
            cell = np.array(rows) * scale
            i += 3
        elif m := re.match(r"\s*ATOMIC_POSITIONS\s*\(?(\w+)\)?", line):
            unit = m.group(1).lower()
            symbols, positions = [], []
            j = i + 1
            while j < n and (pm := _POSITION.match(lines[j])):
                try:
                    positions.append([_float(pm.group(k)) for k in (2, 3, 4)])
                except ValueError:
                    break
                symbols.append(_element(pm.group(1)))
                j += 1
            if positions and cell is not None:
                pos = np.array(positions)
                if unit == "crystal":
                    pos = pos @ cell
                elif unit == "bohr":
                    pos = pos * Bohr
                elif unit == "alat":
                    pos = pos * (out.alat or 1.0)
                out.geometries.append(Atoms(symbols, positions=pos, cell=cell, pbc=True))
            i = j - 1
        elif "End of self-consistent calculation" in line or "End of band structure" in line:
            i = _parse_bands(lines, i + 1, out) - 1
        elif m := re.search(r"the Fermi energy is\s+(\S+)\s+ev", line):
            out.fermi_energy = _float(m.group(1))
        elif m := re.search(r"the spin up/dw Fermi energies are\s+(\S+)\s+(\S+)\s+ev", line):
            out.fermi_energy = max(_float(m.group(1)), _float(m.group(2)))
        elif m := _HOMO_LUMO.search(line):
            out.homo, out.lumo = _float(m.group(1)), _float(m.group(2))
        elif m := re.search(r"highest occupied level \(ev\):\s+(\S+)", line):
            out.homo, out.lumo = _float(m.group(1)), None
        elif m := re.search(r"total magnetization\s*=\s*(\S+)\s+Bohr mag/cell", line):
            out.total_magnetization = _float(m.group(1))
        elif "Magnetic moment per site" in line:
            moments = []
            j = i + 1
            while j < n and (mm := _SITE_MOMENT.search(lines[j])):
                moments.append(_float(mm.group(1)))
                j += 1
            if moments:
                out.site_moments = np.array(moments)
            i = j - 1
        elif "%%%%%%%%%%" in line and out.error is None and i + 2 < n:
            routine = re.search(r"Error in routine\s+(\S+)\s*\((-?\d+)\)", lines[i + 1])
            if routine:
                message = lines[i + 2].strip()
                out.error = f"{routine.group(1)} ({routine.group(2)}): {message}"
                i += 2
        elif "Maximum CPU time exceeded" in line:
            out.cpu_time_exceeded = True
        elif "The maximum number of steps has been reached" in line:
            out.max_steps_reached = True
        elif "bfgs converged in" in line or "Damped Dynamics: convergence achieved" in line:
            out.ionic_converged = True
        elif "history already reset at previous step" in line:
            out.bfgs_history_failed = True  # pw.x 6.x goes on to print "bfgs converged"
            out.warnings.append(stripped)
        elif "JOB DONE" in line:
            out.job_done = True
        elif m := re.match(r"\s*PWSCF\s*:.*CPU\s+(.*)WALL", line):
            out.walltime_s = _walltime(m.group(1))
        elif "Message from routine" in line and i + 1 < n:
            note = f"{stripped} {lines[i + 1].strip()}"
            if note not in out.warnings:
                out.warnings.append(note)
        elif m := re.search(r"c_bands:\s+(\d+) eigenvalues not converged", line):
            note = "c_bands: eigenvalues not converged"
            if note not in out.warnings:
                out.warnings.append(note)
        elif stripped.startswith(("WARNING", "Warning:")) and stripped not in out.warnings:
            out.warnings.append(stripped)
        i += 1
    rho = [_numbers(x)[0] for x in re.findall(r"negative rho \(up, ?down\):\s*(\S+)", text)]
    if rho and max(rho) > 1e-3:
        out.warnings.append(f"negative rho up to {max(rho):.3g} electrons: raise ecutrho?")
    return out


def _parse_bands(lines: list[str], start: int, out: PwOutput) -> int:
    """Parse a band-structure section; returns the index of the first line after it."""
    spins: list[list[list[float]]] = [[]]
    occs: list[list[list[float]]] = [[]]
    target: list[float] | None = None
    i = start
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped:
            i += 1
            continue
        if "SPIN UP" in stripped:
            spins, occs = [[]], [[]]
        elif "SPIN DOWN" in stripped:
            spins.append([])
            occs.append([])
        elif re.match(r"k =.*bands \(ev\)", stripped):
            spins[-1].append([])
            target = spins[-1][-1]
        elif stripped.startswith("occupation numbers"):
            occs[-1].append([])
            target = occs[-1][-1]
        elif _NUMERIC_LINE.fullmatch(stripped) and target is not None:
            target.extend(_numbers(stripped))
        else:
            break
        i += 1
    bands = {len(k) for spin in spins for k in spin}
    if spins[0] and len(bands) == 1 and len({len(s) for s in spins}) == 1:
        out.eigenvalues = np.array(spins, dtype=float)
        if all(len(o) == len(s) for o, s in zip(occs, spins, strict=True)):
            occ = np.array(occs, dtype=float)
            out.occupations = occ if occ.shape == out.eigenvalues.shape else None
        else:
            out.occupations = None
    return i


# ---------------------------------------------------------------------------------------------
# Input generator and registry entry (issue 11, "one home per program"): the protocols, the
# cutoffs and k-points of a run, and what the code registry knows of pw.x.
# ---------------------------------------------------------------------------------------------


FIXED_OCCUPATIONS_MIN_GAP = 0.1
"""Smallest band gap (eV) for which :meth:`EspressoInputs.for_band_gap` fixes occupations: a
narrower gap may close in a strained or displaced copy of the cell."""


class EspressoInputs(InputGenerator):
    """pw.x parameters of one run: protocol, cutoffs from the pseudopotentials, k-points.

    Protocol levels:

    ``kpoints``
        Points per Å⁻¹ along each reciprocal vector (2π included), Γ-including grid.
    ``cutoff``
        ecutwfc = ``factor`` × the largest cutoff the chosen pseudopotentials suggest, or
        ``fallback_ry`` for pseudopotentials that suggest none (ecutrho likewise, at least
        4 × ecutwfc, else the template's default); Ry.
    ``parameters``
        pw.x namelists; the user's parameters are merged over these and win.
    """

    code: ClassVar[str] = "espresso"
    occupations_by_band_gap: ClassVar[bool] = True
    levels: ClassVar[dict[str, Any]] = {
        "moderate": {
            "kpoints": {"density": 4.0},
            "cutoff": {"factor": 1.0, "fallback_ry": 30.0},
            "parameters": {
                "system": {"occupations": "smearing", "smearing": "mv", "degauss": 0.01},
                "electrons": {"conv_thr": 1.0e-9, "mixing_beta": 0.4},
                "ions": {},
                "cell": {"press_conv_thr": 0.2},
            },
        },
        "fast": {
            "PARENT": "moderate",
            "kpoints": {"density": 2.5},
            "cutoff": {"factor": 0.8, "fallback_ry": 20.0},
            "parameters": {"electrons": {"conv_thr": 1.0e-7}, "cell": {"press_conv_thr": 1.0}},
        },
        "precise": {
            "PARENT": "moderate",
            "kpoints": {"density": 6.0},
            "cutoff": {"factor": 1.3, "fallback_ry": 45.0},
            "parameters": {"electrons": {"conv_thr": 1.0e-11}, "cell": {"press_conv_thr": 0.05}},
        },
    }

    @staticmethod
    def pseudopotentials(elements: list[str], parameters: Mapping[str, Any],
                         pseudo_dir: str | None = None) -> dict[str, Any]:
        """The pseudopotential chosen for each element from ``pseudo_dir`` (else the
        parameters' ``pseudo_dir``, else the Debian data directory), for the parameters'
        ``functional`` and explicit ``pseudopotentials``.

        Raises
        ------
        SetupError
            When an element has no pseudopotential there.
        """
        return select_pseudopotentials(
            elements, Path(pseudo_dir or parameters.get("pseudo_dir") or DEFAULT_PSEUDO_DIR),
            functional=str(parameters.get("functional", "PBE")),
            explicit=parameters.get("pseudopotentials"),
        )

    def check(self, elements: list[str], parameters: dict[str, Any]) -> None:
        """Raise unless every element has a pseudopotential (the registry's input check)."""
        self.pseudopotentials(elements, parameters)

    def complete(self, atoms: Atoms, parameters: dict[str, Any], protocol: Mapping[str, Any],
                 pseudo_dir: str | None) -> dict[str, Any]:
        """ecutwfc/ecutrho (Ry) from the protocol's factor and the pseudopotentials'
        suggestions, unless the user set them."""
        system = dict(parameters.get("system") or {})
        if system.get("ecutwfc") is not None:
            return parameters
        cutoff = protocol.get("cutoff") or {}
        factor = float(cutoff.get("factor", 1.0))
        fallback = float(cutoff.get("fallback_ry", 30.0))
        pseudos = self.pseudopotentials(
            list(dict.fromkeys(atoms.get_chemical_symbols())), parameters, pseudo_dir
        )
        wfc = [p.wfc_cutoff for p in pseudos.values()]
        rho = [p.rho_cutoff for p in pseudos.values() if p.rho_cutoff]
        suggested = max((w for w in wfc if w), default=0.0)
        ecutwfc = factor * suggested if all(wfc) else max(fallback, factor * suggested)
        system["ecutwfc"] = round(ecutwfc, 1)
        if system.get("ecutrho") is None and rho:
            system["ecutrho"] = round(max(factor * max(rho), 4 * system["ecutwfc"]), 1)
        return {**parameters, "system": system}

    def fixed_grid(self, kpoints: dict[str, Any]) -> dict[str, Any]:
        """A Γ-including grid unless a shift was given."""
        kpoints.setdefault("shift", [0, 0, 0])
        return kpoints

    def for_forces(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """Forces of a few meV/Å need a tight SCF: conv_thr 1e-10 Ry unless set."""
        parameters = super().for_forces(parameters)
        parameters.setdefault("electrons", {}).setdefault("conv_thr", 1e-10)
        return parameters

    def for_band_gap(self, parameters: Mapping[str, Any] | None, band_gap: float | None
                     ) -> dict[str, Any]:
        """Fixed occupations when ``band_gap`` (eV, found by an earlier calculation with the
        protocol's smearing) is at least :data:`FIXED_OCCUPATIONS_MIN_GAP`, unless the user
        chose ``system.occupations``; else the protocol's Marzari–Vanderbilt smearing.

        Smearing (0.01 Ry) on a semiconductor leaves the valence-band top partly empty, which
        softens its phonons and shifts stresses and energies (Si: Γ optical mode 3–4 % low).
        Should the material turn out metallic after all, the after-the-run check
        ``fixed_occupations_metal`` puts the smearing back
        (:mod:`matdx.codes.espresso_handlers`).
        """
        parameters = super().for_band_gap(parameters, band_gap)
        system = dict(parameters.get("system") or {})
        if band_gap is None or band_gap < FIXED_OCCUPATIONS_MIN_GAP or "occupations" in system:
            return parameters
        system["occupations"] = "fixed"
        return {**parameters, "system": system}

    def method(self, result: Any, level: str) -> dict[str, Any]:
        """The common method section plus functional, basis (Ry), k-points, smearing, spin."""
        method = super().method(result, level)
        parameters = result.parameters or {}
        system = parameters.get("system") or {}
        method["functional"] = parameters.get("functional")
        method["basis"] = {k: system[k] for k in ("ecutwfc", "ecutrho") if system.get(k)}
        method["basis"]["unit"] = "Ry"
        method["kpoints"] = parameters.get("kpoints") or {}
        if system.get("occupations") == "smearing":
            method["smearing"] = {"type": system.get("smearing"),
                                  "width_Ry": system.get("degauss")}
        method["spin"] = {"nspin": system.get("nspin", 1)}
        return method


_INPUTS = EspressoInputs()
__all__ += ["CODE", "FIXED_OCCUPATIONS_MIN_GAP", "EspressoInputs"]

CODE = CodeInfo(
    "espresso", ALL_RECIPES - {"md"}, program="pw.x",
    install_hint="apt-get install quantum-espresso quantum-espresso-data",
    template=EspressoTemplate, check_inputs=_INPUTS.check, inputs=_INPUTS,
)
