"""Trajectories as H5MD files: the artifact format of MD runs and relaxation paths.

An H5MD file (https://www.nongnu.org/h5md/, version 1.1) is HDF5 with a fixed layout, so
MDAnalysis, ``h5py`` or any HDF5 tool can open what matdx writes. The layout used here::

    /h5md                          version = [1, 1]; creator = matdx
    /particles/all/species         (n_atoms,) int32, atomic numbers (time independent)
    /particles/all/box             dimension = 3, boundary = periodic|none per axis
    /particles/all/box/edges       step (n,), time (n,) fs, value (n, 3, 3) Å (rows are vectors)
    /particles/all/position        step, time, value (n, n_atoms, 3) Å
    /particles/all/velocity        optional, value (n, n_atoms, 3) Å/fs
    /particles/all/force           optional, value (n, n_atoms, 3) eV/Å
    /observables/<name>            optional scalars per frame: potential_energy (eV),
                                   kinetic_energy (eV), total_energy (eV), temperature (K)

Datasets are chunked by blocks of frames and gzip-compressed; frames are appended one at a time
while a run goes on and read back block by block, so a trajectory larger than memory can be
analysed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

__all__ = ["MEDIA_TYPE", "Frames", "TrajectoryReader", "TrajectoryWriter"]

MEDIA_TYPE = "application/x-h5md"

OBSERVABLE_UNITS = {
    "potential_energy": "eV",
    "kinetic_energy": "eV",
    "total_energy": "eV",
    "temperature": "K",
}
_PER_ATOM_UNITS = {"position": "Angstrom", "velocity": "Angstrom fs-1", "force": "eV Angstrom-1"}


@dataclass(frozen=True)
class Frames:
    """A block of consecutive frames.

    Attributes
    ----------
    positions : (n_frames, n_atoms, 3) float64, Å
    cells : (n_frames, 3, 3) float64, Å, lattice vectors as rows
    times : (n_frames,) float64, fs
    steps : (n_frames,) int64, MD step or optimizer iteration
    velocities : (n_frames, n_atoms, 3) float64, Å/fs, or None
    forces : (n_frames, n_atoms, 3) float64, eV/Å, or None
    observables : name -> (n_frames,) float64 in the units of ``OBSERVABLE_UNITS``
    """

    positions: np.ndarray
    cells: np.ndarray
    times: np.ndarray
    steps: np.ndarray
    velocities: np.ndarray | None
    forces: np.ndarray | None
    observables: dict[str, np.ndarray]


class TrajectoryWriter:
    """Append frames to a new H5MD file.

    Parameters
    ----------
    path
        File to create; an existing file is an error (artifacts are never overwritten).
    numbers : (n_atoms,) int
        Atomic numbers.
    pbc : (3,) bool
        Periodic boundary conditions per cell vector.
    velocities, forces
        Whether frames carry velocities (Å/fs) and forces (eV/Å).
    observables
        Names of per-frame scalars, from ``OBSERVABLE_UNITS``.
    frames_per_chunk
        HDF5 chunk length along the frame axis.

    Examples
    --------
    >>> with TrajectoryWriter("md.h5", atoms.numbers, atoms.pbc) as traj:  # doctest: +SKIP
    ...     traj.append(atoms.positions, atoms.cell.array, time=0.0, step=0)
    """

    def __init__(
        self,
        path: str | Path,
        numbers: Sequence[int] | np.ndarray,
        pbc: Sequence[bool] | np.ndarray = (True, True, True),
        *,
        velocities: bool = False,
        forces: bool = False,
        observables: Sequence[str] = (),
        frames_per_chunk: int = 16,
    ) -> None:
        numbers = np.asarray(numbers, dtype=np.int32)
        if numbers.ndim != 1 or numbers.size == 0:
            raise ValueError(f"numbers: expected a non-empty (n_atoms,) array, got {numbers.shape}")
        unknown = sorted(set(observables) - set(OBSERVABLE_UNITS))
        if unknown:
            raise ValueError(
                f"observables: unknown {unknown}; accepted: {sorted(OBSERVABLE_UNITS)}"
            )
        self.path = Path(path)
        self.n_atoms = int(numbers.size)
        self._file = h5py.File(self.path, "w-")
        self._n = 0
        chunk = max(1, int(frames_per_chunk))

        h5md = self._file.create_group("h5md")
        h5md.attrs["version"] = np.array([1, 1], dtype=np.int32)
        h5md.create_group("creator").attrs["name"] = "matdx"
        h5md.create_group("author").attrs["name"] = "matdx"

        particles = self._file.create_group("particles/all")
        particles.create_dataset("species", data=numbers)
        box = particles.create_group("box")
        box.attrs["dimension"] = 3
        box.attrs["boundary"] = np.array(
            ["periodic" if p else "none" for p in np.asarray(pbc, dtype=bool)], dtype="S8"
        )
        self._elements: dict[str, h5py.Group] = {
            "edges": self._element(box, "edges", (3, 3), "Angstrom", chunk)
        }
        per_atom = {"position": True, "velocity": velocities, "force": forces}
        for name, wanted in per_atom.items():
            if wanted:
                self._elements[name] = self._element(
                    particles, name, (self.n_atoms, 3), _PER_ATOM_UNITS[name], chunk
                )
        for name in observables:
            self._elements[name] = self._element(
                self._file.require_group("observables"), name, (), OBSERVABLE_UNITS[name], chunk
            )

    @staticmethod
    def _element(
        parent: h5py.Group, name: str, shape: tuple[int, ...], unit: str, chunk: int
    ) -> h5py.Group:
        group = parent.create_group(name)
        group.create_dataset(
            "step", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(max(chunk, 256),)
        )
        time = group.create_dataset(
            "time", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(max(chunk, 256),)
        )
        time.attrs["unit"] = "fs"
        value = group.create_dataset(
            "value",
            shape=(0, *shape),
            maxshape=(None, *shape),
            dtype=np.float64,
            chunks=(chunk, *shape),
            compression="gzip",
            compression_opts=1,
            shuffle=True,
        )
        value.attrs["unit"] = unit
        return group

    def append(
        self,
        positions: np.ndarray,
        cell: np.ndarray,
        *,
        time: float,
        step: int,
        velocities: np.ndarray | None = None,
        forces: np.ndarray | None = None,
        **observables: float,
    ) -> None:
        """Append one frame.

        Parameters
        ----------
        positions : (n_atoms, 3) Å
        cell : (3, 3) Å, lattice vectors as rows
        time : fs
        step : MD step or optimizer iteration
        velocities : (n_atoms, 3) Å/fs; required when the writer was opened with velocities
        forces : (n_atoms, 3) eV/Å; required when the writer was opened with forces
        observables : per-frame scalars named when the writer was opened
        """
        values: dict[str, np.ndarray | float] = {"edges": cell, "position": positions}
        if "velocity" in self._elements:
            values["velocity"] = velocities
        if "force" in self._elements:
            values["force"] = forces
        values.update(observables)
        missing = sorted(name for name in self._elements if values.get(name) is None)
        extra = sorted(set(values) - set(self._elements))
        if missing or extra:
            raise ValueError(f"frame {self._n}: missing {missing}, unexpected {extra}")
        for name, group in self._elements.items():
            value = np.asarray(values[name], dtype=np.float64)
            expected = group["value"].shape[1:]
            if value.shape != expected:
                raise ValueError(f"{name}: expected shape {expected}, got {value.shape}")
            for key in ("step", "time", "value"):
                group[key].resize(self._n + 1, axis=0)
            group["step"][self._n] = step
            group["time"][self._n] = time
            group["value"][self._n] = value
        self._n += 1

    @property
    def n_frames(self) -> int:
        return self._n

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TrajectoryReader:
    """Read an H5MD trajectory frame block by frame block.

    Parameters
    ----------
    path
        An H5MD file written by :class:`TrajectoryWriter` (or any H5MD file with a
        ``particles/all`` group holding ``position`` and ``box/edges``).

    Raises
    ------
    ValueError
        If the file is not H5MD or lacks positions.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = h5py.File(self.path, "r")
        try:
            particles = self._file["particles/all"]
            self._position = particles["position"]
            self.numbers = np.asarray(particles["species"][()], dtype=np.int64)
        except KeyError as err:
            self._file.close()
            raise ValueError(f"{self.path}: not an H5MD trajectory ({err})") from err
        self._box = particles["box"]
        self.pbc = np.array(
            [b == b"periodic" for b in self._box.attrs.get("boundary", [b"periodic"] * 3)]
        )
        self._optional = {
            name: particles[name] for name in ("velocity", "force") if name in particles
        }
        self._observables = dict(self._file["observables"]) if "observables" in self._file else {}

    @property
    def n_frames(self) -> int:
        return int(self._position["value"].shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self._position["value"].shape[1])

    @property
    def observables(self) -> list[str]:
        return sorted(self._observables)

    def read(self, start: int = 0, stop: int | None = None) -> Frames:
        """Frames ``start`` to ``stop`` (exclusive) as arrays."""
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        sl = slice(start, stop)
        edges = self._box["edges"]
        if isinstance(edges, h5py.Group):
            cells = edges["value"][sl]
        else:  # a time-independent box: (3,) orthorhombic edges or a (3, 3) matrix
            box = np.asarray(edges[()], dtype=np.float64)
            box = np.diag(box) if box.ndim == 1 else box
            cells = np.broadcast_to(box, (max(stop - start, 0), 3, 3)).copy()
        optional = {name: group["value"][sl] for name, group in self._optional.items()}
        return Frames(
            positions=self._position["value"][sl],
            cells=np.asarray(cells, dtype=np.float64),
            times=self._position["time"][sl],
            steps=self._position["step"][sl],
            velocities=optional.get("velocity"),
            forces=optional.get("force"),
            observables={name: group["value"][sl] for name, group in self._observables.items()},
        )

    def blocks(self, frames_per_block: int = 256) -> Iterator[Frames]:
        """Iterate over the trajectory in blocks of at most ``frames_per_block`` frames."""
        for start in range(0, self.n_frames, frames_per_block):
            yield self.read(start, start + frames_per_block)

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> TrajectoryReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
