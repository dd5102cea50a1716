"""LAMMPS (``lmp``): data file and input script, log and dump parsing, error handlers.

Calculations: ``static`` (``run 0``), ``relax`` (``minimize``), ``vc-relax`` (``minimize`` with
``fix box/relax``) and ``md`` (NVE, NVT or NPT with a Nosé–Hoover or Langevin thermostat), all in
``units metal`` (eV, Å, ps, bar: converted to eV, Å, fs, eV/Å³ on read) and ``atom_style
atomic``.

Parameters (a dict, never modified)::

    {
        "pair_style": "eam",                       # required
        "pair_coeff": ["* * Cu_u3.eam"],           # required; "{elements}" expands to the
                                                   # element of each atom type, in type order
        "specorder": ["Cu"],                       # type order (default: by atomic number)
        "timestep": 1.0,                           # fs
        "steps": 1000,                             # md
        "ensemble": "nvt",                         # md: "nve" | "nvt" | "npt"
        "thermostat": "nose-hoover",               # or "langevin"
        "temperature": 300.0,                      # K (nvt, npt)
        "initial_temperature": None,               # K, default: temperature (or the
                                                   # velocities of the atoms when they have any)
        "pressure": 0.0,                           # GPa (npt, vc-relax)
        "barostat": "iso",                         # "iso" | "aniso" | "tri" (npt, vc-relax)
        "damping": None,                           # fs, thermostat (default 100 timesteps)
        "barostat_damping": None,                  # fs (default 1000 timesteps)
        "seed": 4928459,                           # velocities and Langevin noise
        "dump_every": 10,                          # steps between frames (= thermo output)
        "relax": {"etol": 0.0, "ftol": 1e-4, "maxiter": 1000, "maxeval": 10000,
                  "min_style": "cg"},              # ftol in eV/Å
        "neighbor_skin": 2.0,                      # Å
    }

Potential files named in ``pair_coeff`` are looked up as given, then in the profile's
``pseudo_dir`` (default: ``/usr/share/lammps/potentials`` from Debian's ``lammps-data``), and
copied into ``potentials/`` of the run directory.

Cells: LAMMPS needs a right-handed cell with ``a`` along x, ``b`` in the xy plane and small tilt
factors. The template reduces the tilts by adding lattice vectors (the same lattice), rotates the
structure into that frame, and rotates every vector (positions, velocities, forces), tensor
(stress) and cell back on read, so results are in the frame and cell basis of the input atoms.

Trajectories (``md``, ``relax``, ``vc-relax``): the ``traj.dump`` frames become
``trajectory.h5`` (H5MD, :mod:`matdx.codes.trajectory`) with **unwrapped** positions
(continuous across periodic boundaries; wrap them with the cell for in-box coordinates; image
flags are not stored since unwrapped positions carry them), the cell of every frame, atomic
numbers as species, time in fs (the minimiser iteration for relaxations), velocities (Å/fs),
forces (eV/Å) and the observables temperature (K), potential, kinetic and total energy (eV)
from the thermo output at the same steps.

A log without ``Total wall time`` raises :class:`~matdx.codes.errors.ReadError`, with the
``ERROR:`` message when LAMMPS printed one.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers
from ase.units import bar, fs

from matdx.codes.base import (
    Template,
    read_parameters_record,
    refusing_unsafe_values,
    write_parameters_record,
)
from matdx.codes.errors import InputError, Kind, NoCorrection, ReadError
from matdx.codes.execution import Profile
from matdx.codes.handlers import Correction, ErrorHandler, Interrupted, OutOfMemory, read_text
from matdx.codes.inputs import InputGenerator
from matdx.codes.registry import CodeInfo
from matdx.codes.results import CalculationResult, file_sha256
from matdx.codes.trajectory import TrajectoryWriter
from matdx.safety.text import check_tokens, check_tree, check_word

__all__ = [
    "DEFAULT_POTENTIALS_DIR",
    "LammpsFrame",
    "LammpsInterrupted",
    "LammpsLostAtoms",
    "LammpsMinimization",
    "LammpsTemplate",
    "lammps_frame",
    "read_dump",
    "read_log",
]

DEFAULT_POTENTIALS_DIR = "/usr/share/lammps/potentials"
INPUT, LOG, DATA = "in.lammps", "log.lammps", "structure.data"
OUTPUT, ERROR = "lammps.out", "lammps.err"
DUMP, FINAL, TRAJECTORY = "traj.dump", "final.dump", "trajectory.h5"
POTENTIALS_SUBDIR = "potentials"

_KEYS = frozenset(
    {
        "pair_style", "pair_coeff", "specorder", "timestep", "steps", "ensemble", "thermostat",
        "temperature", "initial_temperature", "pressure", "barostat", "damping",
        "barostat_damping", "seed", "dump_every", "relax", "neighbor_skin",
    }
)
# A token of a LAMMPS command written from user text: style names, element symbols, file
# names, "*" wildcards and the "{elements}" placeholder; never "#", "&", "$", quotes or ";".
LAMMPS_TOKEN = re.compile(r"[A-Za-z0-9_.+/@:=*{}-]+")
LAMMPS_TOKEN_RULE = "letters, digits and _ . + / @ : = * { } -"


def _check_user_text(parameters: Mapping[str, Any]) -> None:
    """Refuse user text that could add or change a command in ``in.lammps``.

    Every string is held to one line (:func:`~matdx.safety.text.check_tree`); the texts that
    become command arguments (``pair_style``, ``pair_coeff``, ``specorder``,
    ``relax.min_style``) are held to allow-listed tokens.

    Raises
    ------
    InputError
        Naming the field and the offending character or token.
    """
    with refusing_unsafe_values():
        check_tree(dict(parameters), "parameters")
        check_tokens(parameters["pair_style"], "parameters.pair_style", LAMMPS_TOKEN,
                     LAMMPS_TOKEN_RULE)
        coeff = parameters["pair_coeff"]
        for i, line in enumerate([coeff] if isinstance(coeff, str) else list(coeff)):
            check_tokens(line, f"parameters.pair_coeff[{i}]", LAMMPS_TOKEN, LAMMPS_TOKEN_RULE)
        for i, element in enumerate(parameters.get("specorder") or ()):
            check_word(element, f"parameters.specorder[{i}]")
        style = (parameters.get("relax") or {}).get("min_style")
        if style is not None:
            check_word(style, "parameters.relax.min_style")


_RELAX_DEFAULTS = {"etol": 0.0, "ftol": 1e-4, "maxiter": 1000, "maxeval": 10000, "min_style": "cg"}
_THERMO = (
    "step time temp pe ke etotal press pxx pyy pzz pxy pxz pyz vol lx ly lz xy xz yz"
)
_PS = 1000.0  # fs per ps
_GPA_TO_BAR = 1e4
_CONVERGED_CRITERIA = ("energy tolerance", "force tolerance")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?(inf|nan)", re.IGNORECASE)


# --------------------------------------------------------------------------- cell handling


@dataclass(frozen=True)
class LammpsFrame:
    """The LAMMPS frame of a cell.

    ``lammps_cell = transform @ cell @ rotation`` where ``transform`` is a unimodular integer
    matrix (tilt reduction: the same lattice) and ``rotation`` an orthogonal matrix; row vectors
    ``v`` of the input frame become ``v @ rotation`` in LAMMPS.
    """

    lammps_cell: np.ndarray  # (3, 3) lower triangular rows
    rotation: np.ndarray  # (3, 3)
    transform: np.ndarray  # (3, 3) integers

    def to_input_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Row vectors (..., 3) from the LAMMPS frame back to the input frame."""
        return np.asarray(vectors) @ self.rotation.T

    def to_input_tensor(self, tensor: np.ndarray) -> np.ndarray:
        return self.rotation @ np.asarray(tensor) @ self.rotation.T

    def to_input_cell(self, lammps_cell: np.ndarray) -> np.ndarray:
        """A LAMMPS cell (rows) back to the input frame and lattice-vector basis."""
        return np.linalg.inv(self.transform) @ np.asarray(lammps_cell) @ self.rotation.T


def _triangular(cell: np.ndarray) -> np.ndarray:
    a, b, c = cell
    lx = np.linalg.norm(a)
    ahat = a / lx
    xy = b @ ahat
    ly = math.sqrt(max(b @ b - xy * xy, 0.0))
    xz = c @ ahat
    yz = (b @ c - xy * xz) / ly
    lz = math.sqrt(max(c @ c - xz * xz - yz * yz, 0.0))
    return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])


def lammps_frame(cell: np.ndarray) -> LammpsFrame:
    """Tilt-reduced, rotated LAMMPS cell for a right-handed ``cell`` (rows, Å).

    Raises
    ------
    InputError
        If the cell is singular or left-handed.
    """
    cell = np.asarray(cell, dtype=float)
    det = np.linalg.det(cell)
    if abs(det) < 1e-8:
        raise InputError("atoms.cell: singular cell; LAMMPS needs a 3D box")
    if det < 0:
        raise InputError("atoms.cell: left-handed cell; swap two lattice vectors for LAMMPS")
    # c -= n b brings |yz| <= ly/2; then c -= m a and b -= k a bring |xz|, |xy| <= lx/2
    # (adding a to b or c leaves yz unchanged, so one pass suffices).
    tri = _triangular(cell)
    transform = np.eye(3, dtype=int)
    transform[2, 1] = -round(tri[2, 1] / tri[1, 1])
    tri = _triangular(transform @ cell)
    step = np.eye(3, dtype=int)
    step[2, 0] = -round(tri[2, 0] / tri[0, 0])
    step[1, 0] = -round(tri[1, 0] / tri[0, 0])
    transform = step @ transform
    reduced = transform @ cell
    tri = _triangular(reduced)
    rotation = np.linalg.solve(reduced, tri)
    return LammpsFrame(tri, rotation, transform)


# --------------------------------------------------------------------------- output parsing


@dataclass
class LammpsLog:
    """What :func:`read_log` found in ``log.lammps``."""

    version: str | None = None
    thermo: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None
    finished: bool = False
    walltime_s: float | None = None
    stopping_criterion: str | None = None
    warnings: list[str] = field(default_factory=list)


def read_log(text: str) -> LammpsLog:
    """Parse a LAMMPS log: version, thermo rows (keyed by column name), errors, warnings,
    minimisation stopping criterion and the total wall time."""
    log = LammpsLog()
    columns: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if log.version is None and (m := re.match(r"LAMMPS \((.+)\)", stripped)):
            log.version = m.group(1)
        elif stripped.startswith("Step ") or stripped == "Step":
            columns = stripped.split()
        elif columns is not None:
            parts = stripped.split()
            if stripped.startswith("Loop time of"):
                columns = None
            elif len(parts) == len(columns) and all(_FLOAT.fullmatch(x) for x in parts):
                log.thermo.append(dict(zip(columns, map(float, parts), strict=True)))
        if m := re.match(r"ERROR(?: on proc \d+)?:\s*(.*)", stripped):
            log.error = log.error or m.group(1)
        elif stripped.startswith("WARNING") and stripped not in log.warnings:
            log.warnings.append(stripped)
        elif m := re.match(r"Stopping criterion = (.*)", stripped):
            log.stopping_criterion = m.group(1).strip()
        elif m := re.match(r"Total wall time:\s*(\d+):(\d+):(\d+)", stripped):
            h, mi, s = (int(x) for x in m.groups())
            log.finished, log.walltime_s = True, float(3600 * h + 60 * mi + s)
    return log


@dataclass
class DumpFrame:
    """One frame of a custom dump, in the LAMMPS frame and metal units (sorted by id)."""

    step: int
    cell: np.ndarray  # (3, 3) rows
    columns: dict[str, np.ndarray]


def _dump_cell(kind: str, bounds: list[list[float]]) -> np.ndarray:
    if "xy" in kind:
        (xlo_b, xhi_b, xy), (ylo_b, yhi_b, xz), (zlo, zhi, yz) = bounds
        xlo = xlo_b - min(0.0, xy, xz, xy + xz)
        xhi = xhi_b - max(0.0, xy, xz, xy + xz)
        ylo, yhi = ylo_b - min(0.0, yz), yhi_b - max(0.0, yz)
    else:
        (xlo, xhi), (ylo, yhi), (zlo, zhi) = (b[:2] for b in bounds)
        xy = xz = yz = 0.0
    return np.array([[xhi - xlo, 0, 0], [xy, yhi - ylo, 0], [xz, yz, zhi - zlo]])


def read_dump(path: str | Path) -> list[DumpFrame]:
    """Frames of a LAMMPS custom dump file; a truncated last frame is dropped."""
    frames: list[DumpFrame] = []
    lines = read_text(path).splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("ITEM: TIMESTEP"):
            i += 1
            continue
        try:
            step = int(lines[i + 1])
            count = int(lines[i + 3])
            kind = lines[i + 4]
            bounds = [[float(x) for x in lines[i + 5 + k].split()] for k in range(3)]
            names = lines[i + 8].split()[2:]
            rows = np.array(
                [[float(x) for x in lines[i + 9 + k].split()] for k in range(count)]
            )
        except (IndexError, ValueError):
            break
        if rows.shape != (count, len(names)):
            break
        order = np.argsort(rows[:, names.index("id")])
        columns = {name: rows[order, k] for k, name in enumerate(names)}
        frames.append(DumpFrame(step, _dump_cell(kind, bounds), columns))
        i += 9 + count
    return frames


# --------------------------------------------------------------------------- template


def _f(value: float) -> str:
    """Shortest exact text of a float (numpy scalars included)."""
    return repr(float(value))


def _type_order(atoms: Atoms, specorder: list[str] | None) -> list[str]:
    present = sorted(set(atoms.get_chemical_symbols()), key=lambda s: atomic_numbers[s])
    if specorder is None:
        return present
    missing = sorted(set(present) - set(specorder))
    if missing:
        raise InputError(f"specorder={specorder!r} lacks the elements {missing} of the structure")
    return list(specorder)


class LammpsTemplate(Template):
    """LAMMPS ``lmp`` (tested with the 29 Sep 2021 release from Debian).

    Files: ``structure.data``, ``in.lammps``, ``log.lammps``, ``lammps.out``/``lammps.err``,
    ``traj.dump``, ``final.dump``, ``trajectory.h5``, ``potentials/``, ``parameters.json``.
    """

    name = "lammps"
    calculations: ClassVar[frozenset[str]] = frozenset({"static", "relax", "vc-relax", "md"})
    stdout = OUTPUT
    stderr = ERROR
    default_binary: ClassVar[tuple[str, ...]] = ("lmp",)
    install_hint = "apt-get install lammps lammps-data"

    def default_handlers(self) -> tuple[ErrorHandler, ...]:
        from matdx.codes.lammps_handlers import (
            LammpsBondAtomsMissing,
            LammpsNeighborOverflow,
            LammpsNonFiniteThermo,
            LammpsOutOfRange,
        )

        return (
            OutOfMemory((LOG, OUTPUT, ERROR)),
            LammpsLostAtoms(),
            LammpsOutOfRange(),
            LammpsBondAtomsMissing(),
            LammpsNeighborOverflow(),
            LammpsNonFiniteThermo(),
            LammpsMinimization(),
            LammpsInterrupted(),
        )

    def arguments(self) -> list[str]:
        return ["-in", INPUT, "-log", LOG, "-screen", OUTPUT, "-nocite"]

    def profile(self, **kwargs: Any) -> Profile:
        kwargs.setdefault("pseudo_dir", DEFAULT_POTENTIALS_DIR)
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
        """Write ``structure.data`` and ``in.lammps``; copy potential files.

        Raises
        ------
        InputError
            Unknown keys, missing ``pair_style``/``pair_coeff``/``steps``/``temperature``,
            unknown ensemble, thermostat or barostat, a singular or left-handed cell.
        """
        self.check_calculation(calculation)
        directory = Path(directory)
        unknown = sorted(set(parameters) - _KEYS)
        if unknown:
            raise InputError(f"parameters: unknown keys {unknown}; accepted: {sorted(_KEYS)}")
        for key in ("pair_style", "pair_coeff"):
            if not parameters.get(key):
                raise InputError(
                    f"parameters[{key!r}] is required, e.g. 'eam' and ['* * Cu_u3.eam']"
                )
        _check_user_text(parameters)
        if len(atoms) == 0:
            raise InputError("atoms: empty structure")
        p: dict[str, Any] = {
            "specorder": None,
            "timestep": 1.0,
            "seed": 4928459,
            "dump_every": 10,
            "neighbor_skin": 2.0,
            "pressure": 0.0,
            "barostat": "iso",
            "thermostat": "nose-hoover",
            "ensemble": "nvt",
            **dict(parameters),
        }
        p["relax"] = {**_RELAX_DEFAULTS, **dict(parameters.get("relax") or {})}
        pair_coeff = parameters["pair_coeff"]
        p["pair_coeff"] = [pair_coeff] if isinstance(pair_coeff, str) else list(pair_coeff)
        order = _type_order(atoms, p["specorder"])
        p["specorder"] = order
        dt = float(p["timestep"])
        if not dt > 0:
            raise InputError(f"timestep={dt!r}: expected a positive number of fs")
        every = int(p["dump_every"])
        if every < 1:
            raise InputError(f"dump_every={every!r}: expected an integer >= 1")
        if p["barostat"] not in {"iso", "aniso", "tri"}:
            raise InputError(f"barostat={p['barostat']!r}; accepted: 'iso', 'aniso', 'tri'")
        run = self._run_block(calculation, p, atoms, dt)

        frame = lammps_frame(atoms.cell.array)
        if not all(atoms.pbc):
            raise InputError(
                f"atoms.pbc={atoms.pbc.tolist()}: the template writes periodic boxes only"
            )
        pot_dir = Path((profile.pseudo_dir if profile else None) or DEFAULT_POTENTIALS_DIR)
        coeff_lines, copies = self._pair_coeff(p["pair_coeff"], order, pot_dir)

        lines = [
            "# LAMMPS input written by matdx",
            "units metal",
            "atom_style atomic",
            "atom_modify map array",
            "boundary p p p",
            f"read_data {DATA}",
            f"pair_style {p['pair_style']}",
            *coeff_lines,
            f"neighbor {float(p['neighbor_skin'])} bin",
            "neigh_modify every 1 delay 0 check yes",
            f"thermo_style custom {_THERMO}",
            "thermo_modify norm no format float %.16g",
            f"thermo {every}",
            f"timestep {dt / _PS!r}",
            f"dump traj all custom {every} {DUMP} id type xu yu zu vx vy vz fx fy fz",
            "dump_modify traj sort id format float %.16g",
            *run,
            f"write_dump all custom {FINAL} id type xu yu zu vx vy vz fx fy fz "
            "modify sort id format float %.16g",
            "",
        ]
        triclinic = bool(np.any(np.abs(frame.lammps_cell[[1, 2, 2], [0, 0, 1]]) > 1e-10))
        triclinic = triclinic or (calculation in {"vc-relax", "md"} and p["barostat"] == "tri")
        keep = calculation == "md" and self._keep_velocities(p, parameters, atoms)
        data = self._data_file(atoms, order, frame, triclinic, velocities=keep)
        (directory / POTENTIALS_SUBDIR).mkdir(exist_ok=True)
        for source, name in copies:
            target = directory / POTENTIALS_SUBDIR / name
            if not target.exists():
                shutil.copyfile(source, target)
        (directory / DATA).write_text(data)
        (directory / INPUT).write_text("\n".join(lines))
        record = {
            key: p[key] for key in sorted(p) if key in parameters or key in {"specorder", "relax"}
        }
        record.update(
            {
                "timestep": dt,
                "dump_every": every,
                "potential_files": [
                    {"name": name, "sha256": file_sha256(directory / POTENTIALS_SUBDIR / name)}
                    for _, name in copies
                ],
                "frame": {
                    "rotation": frame.rotation.tolist(),
                    "transform": frame.transform.tolist(),
                },
                "input_structure": {
                    "numbers": atoms.numbers.tolist(),
                    "cell": atoms.cell.array.tolist(),
                },
            }
        )
        if calculation == "md":
            for key in ("ensemble", "thermostat", "seed", "steps"):
                record[key] = p.get(key)
        write_parameters_record(directory, self.name, calculation, record)

    @staticmethod
    def _keep_velocities(
        p: Mapping[str, Any], parameters: Mapping[str, Any], atoms: Atoms
    ) -> bool:
        """MD starts from the atoms' velocities: asked for (``initial_temperature=None``), or
        by default when the atoms have velocities."""
        if "initial_temperature" in parameters:
            return parameters["initial_temperature"] is None
        return bool(np.any(atoms.get_momenta() != 0))

    @staticmethod
    def _pair_coeff(
        entries: list[str], order: list[str], pot_dir: Path
    ) -> tuple[list[str], list[tuple[Path, str]]]:
        lines, copies = [], []
        for entry in entries:
            tokens = str(entry).replace("{elements}", " ".join(order)).split()
            for k, token in enumerate(tokens):
                if token == "*" or re.fullmatch(r"[-+\d.*eE:]+", token):
                    continue
                candidates = [Path(token)] if Path(token).is_absolute() else [pot_dir / token]
                source = next((c for c in candidates if c.is_file()), None)
                if source is not None:
                    copies.append((source, source.name))
                    tokens[k] = f"{POTENTIALS_SUBDIR}/{source.name}"
            lines.append("pair_coeff " + " ".join(tokens))
        return lines, copies

    @staticmethod
    def _run_block(calculation: str, p: dict[str, Any], atoms: Atoms, dt: float) -> list[str]:
        if calculation == "static":
            return ["run 0"]
        if calculation in {"relax", "vc-relax"}:
            r = p["relax"]
            block = [f"min_style {r['min_style']}"]
            if calculation == "vc-relax":
                target = float(p["pressure"]) * _GPA_TO_BAR
                block.insert(0, f"fix relax all box/relax {p['barostat']} {target!r} vmax 0.001")
            block.append(
                f"minimize {float(r['etol'])!r} {float(r['ftol'])!r} "
                f"{int(r['maxiter'])} {int(r['maxeval'])}"
            )
            return block
        steps = p.get("steps")
        if steps is None or int(steps) < 0:
            raise InputError(f"steps={steps!r}: md needs a number of steps >= 0")
        ensemble, thermostat = p["ensemble"], p["thermostat"]
        if ensemble not in {"nve", "nvt", "npt"}:
            raise InputError(f"ensemble={ensemble!r}; accepted: 'nve', 'nvt', 'npt'")
        if thermostat not in {"nose-hoover", "langevin"}:
            raise InputError(f"thermostat={thermostat!r}; accepted: 'nose-hoover', 'langevin'")
        block = []
        seed = int(p["seed"])
        if not 0 < seed < 900_000_000:
            raise InputError(f"seed={seed!r}: LAMMPS needs 0 < seed < 900000000")
        temperature = p.get("temperature")
        if ensemble != "nve" and temperature is None:
            raise InputError(f"temperature is required for ensemble={ensemble!r} (K)")
        has_velocities = bool(np.any(atoms.get_momenta() != 0))
        keep = LammpsTemplate._keep_velocities(p, p, atoms)
        if keep and not has_velocities:
            raise InputError("initial_temperature=None keeps the atoms' velocities, but they are 0")
        start = None if keep else p.get("initial_temperature", temperature)
        if start is not None:
            block.append(
                f"velocity all create {float(start)!r} {seed} mom yes rot no dist gaussian"
            )
        tdamp = float(p.get("damping") or 100 * dt) / _PS
        pdamp = float(p.get("barostat_damping") or 1000 * dt) / _PS
        pressure = float(p["pressure"]) * _GPA_TO_BAR
        baro = f"{p['barostat']} {pressure!r} {pressure!r} {pdamp!r}"
        if ensemble == "nve":
            block.append("fix integrate all nve")
        elif thermostat == "nose-hoover":
            temps = f"temp {float(temperature)!r} {float(temperature)!r} {tdamp!r}"
            block.append(
                f"fix integrate all nvt {temps}"
                if ensemble == "nvt"
                else f"fix integrate all npt {temps} {baro}"
            )
        else:
            integrate = "nve" if ensemble == "nvt" else f"nph {baro}"
            block.append(f"fix integrate all {integrate}")
            block.append(
                f"fix thermostat all langevin {float(temperature)!r} {float(temperature)!r} "
                f"{tdamp!r} {seed} zero yes"
            )
        block.append(f"run {int(steps)}")
        return block

    @staticmethod
    def _data_file(
        atoms: Atoms, order: list[str], frame: LammpsFrame, triclinic: bool, velocities: bool
    ) -> str:
        cell = frame.lammps_cell
        positions = atoms.positions @ frame.rotation
        fractional = positions @ np.linalg.inv(cell)
        images = np.floor(fractional + 1e-12).astype(int)
        wrapped = (fractional - images) @ cell
        types = [order.index(s) + 1 for s in atoms.get_chemical_symbols()]
        lines = [
            "LAMMPS data file written by matdx",
            "",
            f"{len(atoms)} atoms",
            f"{len(order)} atom types",
            "",
            f"0.0 {_f(cell[0, 0])} xlo xhi",
            f"0.0 {_f(cell[1, 1])} ylo yhi",
            f"0.0 {_f(cell[2, 2])} zlo zhi",
        ]
        if triclinic:
            lines.append(f"{_f(cell[1, 0])} {_f(cell[2, 0])} {_f(cell[2, 1])} xy xz yz")
        lines += ["", "Masses", ""]
        lines += [f"{k} {_f(atomic_masses[atomic_numbers[s]])}" for k, s in enumerate(order, 1)]
        lines += ["", "Atoms # atomic", ""]
        for k, (t, r, n) in enumerate(zip(types, wrapped, images, strict=True), 1):
            lines.append(f"{k} {t} {_f(r[0])} {_f(r[1])} {_f(r[2])} {n[0]} {n[1]} {n[2]}")
        if velocities:
            v = atoms.get_velocities() @ frame.rotation * (fs * _PS)  # Å/ps
            lines += ["", "Velocities", ""]
            lines += [f"{k} {_f(x[0])} {_f(x[1])} {_f(x[2])}" for k, x in enumerate(v, 1)]
        return "\n".join(lines) + "\n"

    # ----------------------------------------------------------------------- reading

    def read_results(self, directory: Path) -> CalculationResult:
        """Parse ``log.lammps``, ``final.dump`` and ``traj.dump``; write ``trajectory.h5``.

        Raises
        ------
        ReadError
            The log is missing, has an ``ERROR`` or no ``Total wall time`` (truncated), or
            ``final.dump`` is missing or incomplete.
        """
        directory = Path(directory)
        log_path = directory / LOG
        if not log_path.is_file():
            raise ReadError(directory, f"{LOG} is missing", path=log_path)
        log = read_log(log_path.read_text(errors="replace"))
        if log.error:
            raise ReadError(
                directory, f"LAMMPS stopped with an error: {log.error}", kind="input",
                path=log_path,
            )
        if not log.finished:
            raise ReadError(directory, f"{LOG} is truncated: no 'Total wall time'", path=log_path)
        record = read_parameters_record(directory)
        if record is None:
            raise ReadError(directory, "parameters.json is missing", path=directory)
        calculation, parameters = record["calculation"], record["parameters"]
        finals = read_dump(directory / FINAL)
        if not finals or not log.thermo:
            raise ReadError(directory, f"{FINAL} or the thermo output is missing", path=directory)
        frame = LammpsFrame(
            np.zeros((3, 3)),
            np.asarray(parameters["frame"]["rotation"]),
            np.asarray(parameters["frame"]["transform"]),
        )
        order = parameters["specorder"]
        final, thermo = finals[-1], log.thermo[-1]
        structure = self._atoms(final, order, frame)
        p = -np.array(
            [
                [thermo["Pxx"], thermo["Pxy"], thermo["Pxz"]],
                [thermo["Pxy"], thermo["Pyy"], thermo["Pyz"]],
                [thermo["Pxz"], thermo["Pyz"], thermo["Pzz"]],
            ]
        )
        stress = frame.to_input_tensor(p * bar)
        forces = frame.to_input_vectors(
            np.column_stack([final.columns[k] for k in ("fx", "fy", "fz")])
        )
        ionic = None
        if calculation in {"relax", "vc-relax"}:
            criterion = log.stopping_criterion or ""
            ionic = any(c in criterion for c in _CONVERGED_CRITERIA)
        trajectory = None
        if calculation != "static" and (directory / DUMP).is_file():
            trajectory = self._trajectory(directory, log, order, frame, calculation, parameters)
        warnings = [
            w for w in log.warnings if calculation != "static" or "No fixes defined" not in w
        ]
        if ionic is False:
            warnings.append(f"minimisation stopped: {log.stopping_criterion}")
        potentials = [
            {"element": None, "name": item["name"], "sha256": item["sha256"]}
            for item in parameters.get("potential_files", [])
        ]
        return CalculationResult(
            code=self.name,
            code_version=log.version,
            calculation=calculation,
            structure=structure,
            converged=ionic is not False,
            scf_converged=None,
            ionic_converged=ionic,
            energy=float(thermo["PotEng"]),
            forces=forces,
            stress=stress,
            n_ionic_steps=len(log.thermo),
            walltime_s=log.walltime_s,
            pseudopotentials=potentials,
            parameters=parameters,
            warnings=warnings,
            trajectory=trajectory,
        )

    @staticmethod
    def _atoms(dump: DumpFrame, order: list[str], frame: LammpsFrame) -> Atoms:
        c = dump.columns
        numbers = [atomic_numbers[order[int(t) - 1]] for t in c["type"]]
        positions = frame.to_input_vectors(np.column_stack([c["xu"], c["yu"], c["zu"]]))
        atoms = Atoms(
            numbers=numbers, positions=positions, cell=frame.to_input_cell(dump.cell), pbc=True
        )
        if "vx" in c:
            velocities = np.column_stack([c["vx"], c["vy"], c["vz"]]) / (fs * _PS)
            atoms.set_velocities(frame.to_input_vectors(velocities))
        return atoms

    @staticmethod
    def _trajectory(
        directory: Path,
        log: LammpsLog,
        order: list[str],
        frame: LammpsFrame,
        calculation: str,
        parameters: Mapping[str, Any],
    ) -> str | None:
        path = directory / TRAJECTORY
        if path.is_file():
            return TRAJECTORY
        frames = read_dump(directory / DUMP)
        if not frames:
            return None
        rows = {int(row["Step"]): row for row in log.thermo}
        frames = [f for f in frames if f.step in rows]
        if not frames:
            return None
        numbers = [atomic_numbers[order[int(t) - 1]] for t in frames[0].columns["type"]]
        md = calculation == "md"
        observables = (
            ["temperature", "potential_energy", "kinetic_energy", "total_energy"]
            if md
            else ["potential_energy"]
        )
        names = {
            "temperature": "Temp", "potential_energy": "PotEng",
            "kinetic_energy": "KinEng", "total_energy": "TotEng",
        }
        dt = float(parameters["timestep"])
        tmp = directory / f".{TRAJECTORY}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        with TrajectoryWriter(
            tmp, numbers, (True, True, True), velocities=md, forces=True, observables=observables
        ) as writer:
            for item in frames:
                c = item.columns
                row = rows[item.step]
                vectors = {
                    "positions": np.column_stack([c["xu"], c["yu"], c["zu"]]),
                    "forces": np.column_stack([c["fx"], c["fy"], c["fz"]]),
                    "velocities": np.column_stack([c["vx"], c["vy"], c["vz"]]) / _PS,
                }
                writer.append(
                    frame.to_input_vectors(vectors["positions"]),
                    frame.to_input_cell(item.cell),
                    time=item.step * dt if md else float(item.step),
                    step=item.step,
                    forces=frame.to_input_vectors(vectors["forces"]),
                    velocities=frame.to_input_vectors(vectors["velocities"]) if md else None,
                    **{name: float(row[names[name]]) for name in observables},
                )
        os.replace(tmp, path)
        return TRAJECTORY


# --------------------------------------------------------------------------- error handlers


class LammpsLostAtoms(ErrorHandler):
    """``ERROR: Lost atoms``: atoms moved too far in one step (out-of-range atoms, missing
    bond atoms, non-finite thermodynamics and neighbour-list overflow are handled in
    :mod:`matdx.codes.lammps_handlers`).

    In MD the integration is unstable: halve the timestep (down to 0.1 fs). In a minimisation
    the potential or the starting structure is unphysical: no parameter fixes that.
    """

    name = "lost_atoms"
    kind: ClassVar[Kind] = "numerical"
    default_max_corrections = 3
    _pattern = re.compile(r"ERROR.*Lost atoms")

    def detect(self, directory: Path) -> bool:
        return self._pattern.search(read_text(Path(directory) / LOG)) is not None

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        record = read_parameters_record(Path(directory)) or {}
        if record.get("calculation") != "md":
            raise NoCorrection("atoms were lost in a minimisation: check the structure/potential")
        dt = float(parameters.get("timestep", 1.0))
        if dt / 2 < 0.1:
            raise NoCorrection(f"atoms lost even with a {dt} fs timestep")
        return Correction(
            handler=self.name,
            description=f"atoms lost in MD with a {dt} fs timestep: use {dt / 2} fs",
            parameter_updates={"timestep": dt / 2},
        )


def _last_frame_atoms(directory: Path) -> Atoms | None:
    record = read_parameters_record(directory)
    frames = read_dump(directory / DUMP)
    if record is None or not frames:
        return None
    parameters = record["parameters"]
    frame = LammpsFrame(
        np.zeros((3, 3)),
        np.asarray(parameters["frame"]["rotation"]),
        np.asarray(parameters["frame"]["transform"]),
    )
    return LammpsTemplate._atoms(frames[-1], parameters["specorder"], frame)


class LammpsMinimization(ErrorHandler):
    """The minimiser stopped on ``max iterations`` or ``max force evaluations`` (or another
    criterion than the energy/force tolerances) without converging.

    Restart from the last dumped structure with twice ``maxiter`` and ``maxeval``.
    """

    name = "ionic_unconverged"
    kind: ClassVar[Kind] = "numerical"
    default_max_corrections = 3

    def detect(self, directory: Path) -> bool:
        directory = Path(directory)
        record = read_parameters_record(directory) or {}
        if record.get("calculation") not in {"relax", "vc-relax"}:
            return False
        log = read_log(read_text(directory / LOG))
        criterion = log.stopping_criterion
        return criterion is not None and not any(c in criterion for c in _CONVERGED_CRITERIA)

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        directory = Path(directory)
        structure = _last_frame_atoms(directory)
        if structure is None:
            raise NoCorrection("no dumped structure to restart the minimisation from")
        structure.set_velocities(np.zeros((len(structure), 3)))
        relax = {**_RELAX_DEFAULTS, **dict(parameters.get("relax") or {})}
        criterion = read_log(read_text(directory / LOG)).stopping_criterion
        updates = {"maxiter": 2 * int(relax["maxiter"]), "maxeval": 2 * int(relax["maxeval"])}
        return Correction(
            handler=self.name,
            description=f"minimisation stopped on '{criterion}': restart from the last "
            f"structure with maxiter {updates['maxiter']}, maxeval {updates['maxeval']}",
            parameter_updates={"relax": updates},
            restart_structure=structure,
        )


class LammpsInterrupted(Interrupted):
    """Timeout, walltime or killed process.

    Relaxations restart from the last dumped structure; MD continues from the last dumped frame
    (positions and velocities) for the remaining steps; static runs rerun unchanged.
    """

    def __init__(self, max_corrections: int | None = None) -> None:
        super().__init__(files=(), markers=None, max_corrections=max_corrections)

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        directory = Path(directory)
        record = read_parameters_record(directory) or {}
        calculation = record.get("calculation")
        structure = _last_frame_atoms(directory)
        if structure is None or calculation == "static":
            return self.base_correction(directory, "rerun unchanged")
        if calculation == "md":
            frames = read_dump(directory / DUMP)
            done = frames[-1].step
            remaining = max(int(parameters.get("steps", 0)) - done, 0)
            return self.base_correction(
                directory,
                f"continue the MD from step {done} with its velocities for {remaining} steps",
                parameter_updates={"steps": remaining, "initial_temperature": None},
                restart_structure=structure,
            )
        structure.set_velocities(np.zeros((len(structure), 3)))
        return self.base_correction(
            directory, "restart the minimisation from the last structure",
            restart_structure=structure,
        )


# ---------------------------------------------------------------------------------------------
# Input generator and registry entry (issue 11, "one home per program"): the protocols of a
# run and what the code registry knows of lmp.
# ---------------------------------------------------------------------------------------------

class LammpsInputs(InputGenerator):
    """LAMMPS protocols: minimiser tolerances (``ftol`` in eV/Å) and the MD time step (fs)."""

    code: ClassVar[str] = "lammps"
    levels: ClassVar[dict[str, Any]] = {
        "moderate": {"parameters": {
            "relax": {"etol": 0.0, "ftol": 1.0e-4, "maxiter": 2000, "maxeval": 20000,
                      "min_style": "cg"},
            "timestep": 1.0,
        }},
        "fast": {"PARENT": "moderate", "parameters": {
            "relax": {"ftol": 1.0e-3, "maxiter": 500}, "timestep": 2.0}},
        "precise": {"PARENT": "moderate", "parameters": {
            "relax": {"ftol": 1.0e-6, "maxiter": 10000, "maxeval": 100000}, "timestep": 0.5}},
    }


CODE = CodeInfo(
    "lammps", frozenset({"static", "relax", "eos", "elastic", "phonon", "md"}), program="lmp",
    install_hint="apt-get install lammps lammps-data", template=LammpsTemplate,
    inputs=LammpsInputs(),
)
__all__ += ["CODE", "LammpsInputs"]
