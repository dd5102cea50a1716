"""Extended XYZ for training interatomic potentials: every stored configuration with its
reference energy, forces and stress, split into train / validation / test sets by structure.

Each frame is an ``ase.Atoms`` written with ASE's extxyz writer:

- ``REF_energy`` (info, eV), ``REF_forces`` (per-atom array, eV/Å) and, where the record has
  one, ``REF_stress`` (info, 9 values: the 3×3 tensor row by row, eV/Å³, ASE's sign
  convention: negative under compression); the ``REF_`` prefix keeps ASE from turning them
  into a calculator;
- ``method`` (``code | functional | potential | protocol``, ``unknown`` when the record names
  none: frames of different methods must not be mixed in one training set),
- ``config_type`` (the calculation type: static, relax, md, ...), ``record_id``, ``frame``
  (the trajectory frame index, -1 for the record's own final configuration) and ``split``.

A record contributes its own configuration (its structure and results) and every frame of
its trajectories (H5MD artifacts: relaxation paths, MD runs) that carries an energy or forces;
a trajectory frame identical to the record's own configuration is written once. Trajectory
frames carry no stress (H5MD files hold none).

The split is decided per record by hashing its ``structure_hash`` with a seed, so all frames
of a structure land in the same set, and a structure's set never changes when the store grows
or the export's selection changes. Files: ``train.xyz``, ``validation.xyz``, ``test.xyz``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from matdx.store.artifacts import ArtifactStore
from matdx.store.exporting import ExportedRecord

__all__ = [
    "SPLITS",
    "TRAJECTORY_MEDIA_TYPES",
    "ExtxyzReport",
    "Frame",
    "FrameReader",
    "split_of",
    "write_extxyz",
]

SPLITS = ("train", "validation", "test")
TRAJECTORY_MEDIA_TYPES = frozenset({"application/x-h5md"})
SAME_POSITION_A = 1e-8


@dataclass(frozen=True)
class Frame:
    """One stored configuration of a trajectory.

    Attributes
    ----------
    numbers : (n_atoms,) int, atomic numbers
    positions : (n_atoms, 3) float, Å
    cell : (3, 3) float, Å, lattice vectors as rows
    pbc : (3,) bool
    energy : potential energy, eV, or None
    forces : (n_atoms, 3) float, eV/Å, or None
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: float | None
    forces: np.ndarray | None


# Reads the frames of a trajectory file (H5MD); supplied by the caller, since the store does
# not depend on the code adapters that own the trajectory format.
FrameReader = Callable[[Path], Iterable[Frame]]


@dataclass
class ExtxyzReport:
    records: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    frames: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    files: dict[str, Path] = field(default_factory=dict)
    skipped: int = 0  # records without a structure or reference data


def split_of(structure_hash: str, fractions: tuple[float, float, float], seed: int = 0) -> str:
    """The set (``train``, ``validation`` or ``test``) of a structure.

    Parameters
    ----------
    structure_hash
        The record's ``system.structure_hash``.
    fractions
        Shares of train, validation and test; they must add up to 1.
    seed
        Changes the assignment as a whole, deterministically.
    """
    digest = hashlib.sha256(f"{seed}:{structure_hash}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "validation" if u < fractions[0] + fractions[1] else "test"


def _record_frame(exported: ExportedRecord) -> tuple[Frame, np.ndarray | None] | None:
    from ase.data import atomic_numbers

    record = exported.record
    system, results = record.system, record.results
    if system is None or (results.energy is None and results.forces is None):
        return None
    frame = Frame(
        numbers=np.array([atomic_numbers[s] for s in system.species_at_sites]),
        positions=np.asarray(system.cartesian_site_positions, dtype=float),
        cell=np.asarray(system.lattice_vectors, dtype=float),
        pbc=np.asarray(system.dimension_types, dtype=bool),
        energy=results.energy,
        forces=None if results.forces is None else np.asarray(results.forces, dtype=float),
    )
    stress = None if results.stress is None else np.asarray(results.stress, dtype=float)
    return frame, stress


def _same(a: Frame, b: Frame) -> bool:
    return (
        a.numbers.shape == b.numbers.shape
        and bool(np.all(a.numbers == b.numbers))
        and np.allclose(a.positions, b.positions, rtol=0, atol=SAME_POSITION_A)
        and np.allclose(a.cell, b.cell, rtol=0, atol=SAME_POSITION_A)
    )


def _atoms(
    frame: Frame,
    index: int,
    stress: np.ndarray | None,
    config_type: str,
    record_id: str,
    split: str,
    method: str = "",
):
    from ase import Atoms

    atoms = Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell, pbc=frame.pbc)
    if frame.energy is not None:
        atoms.info["REF_energy"] = float(frame.energy)
    if stress is not None:
        atoms.info["REF_stress"] = np.asarray(stress, dtype=float).reshape(9)
    atoms.info["method"] = method
    atoms.info["config_type"] = config_type
    atoms.info["record_id"] = record_id
    atoms.info["frame"] = index
    atoms.info["split"] = split
    if frame.forces is not None:
        atoms.arrays["REF_forces"] = np.asarray(frame.forces, dtype=float)
    return atoms


def write_extxyz(
    records: Iterable[ExportedRecord],
    directory: str | Path,
    *,
    artifacts: ArtifactStore,
    read_frames: FrameReader | None = None,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> ExtxyzReport:
    """Write ``train.xyz``, ``validation.xyz`` and ``test.xyz`` into ``directory``.

    Parameters
    ----------
    records
        The records to export (see :func:`matdx.store.exporting.exportable_records` with
        ``artifacts=True``, since trajectory frames are artifact content).
    artifacts
        The artifact store holding the trajectories.
    read_frames
        Reads a trajectory file into frames; None writes only the records' own
        configurations.
    fractions
        Shares of train, validation and test (non-negative, adding up to 1).
    seed
        Seed of the split.

    Raises
    ------
    ValueError
        If ``fractions`` are negative or do not add up to 1.
    """
    from ase.io import write

    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            f"fractions: expected three non-negative shares (train, validation, test) adding "
            f"up to 1, got {fractions}"
        )
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    report = ExtxyzReport(files={split: target / f"{split}.xyz" for split in SPLITS})
    handles = {split: path.open("w", encoding="utf-8") for split, path in report.files.items()}
    try:
        for exported in records:
            own = _record_frame(exported)
            if own is None:
                report.skipped += 1
                continue
            record = exported.record
            frame, stress = own
            split = split_of(record.system.structure_hash, fractions, seed)
            config_type = record.method.calculation or "unknown"
            label = record.method.label or "unknown"  # extxyz cannot write an empty value
            atoms = [_atoms(frame, -1, stress, config_type, record.record_id, split, label)]
            trajectories = [a for a in record.artifacts if a.media_type in TRAJECTORY_MEDIA_TYPES]
            for reference in trajectories if read_frames is not None else ():
                for index, stored in enumerate(read_frames(artifacts.path(reference.sha256))):
                    if (stored.energy is None and stored.forces is None) or _same(stored, frame):
                        continue
                    atoms.append(_atoms(stored, index, None, config_type, record.record_id,
                                        split, label))
            write(handles[split], atoms, format="extxyz")
            report.records[split] += 1
            report.frames[split] += len(atoms)
    finally:
        for handle in handles.values():
            handle.close()
    return report
