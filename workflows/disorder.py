"""Disordered structures: partial occupancies, vacancies and mixed species, refused at submit.

A calculator computes one ordered arrangement of atoms. File readers do not say when a site is
disordered: ASE's CIF reader keeps the majority species of a 50/50 Cu/Au site (and records
the occupancies in ``atoms.info["occupancy"]``), so a disordered alloy would silently be
computed as pure Au. Every structure is therefore checked here, whatever it came from:

- a CIF file: its ``_atom_site`` loop (labels, species, occupancies), sites grouped by position;
- any ``ase.Atoms`` (POSCAR, extended XYZ, objects passed from Python): occupancies recorded by a
  reader (``info["occupancy"]``, a per-atom ``occupancy`` array), the dummy/vacancy species
  ``X``, and two species on the same position;
- a pymatgen ``Structure`` (also in its ``as_dict`` form, as jobs store it): every site must hold
  one species with occupancy 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ORDER_IT", "DisorderedStructure", "check_ordered", "disordered_sites"]

ORDER_IT = ("order it first (choose one arrangement, e.g. a special quasi-random structure or "
            "an enumeration of orderings such as pymatgen's OrderDisorderedStructure"
            "Transformation) and submit the ordered cells")
SAME_SITE = 0.01  # Å: atoms closer than this share one site
FULL = 1e-6  # tolerance on an occupancy of 1


class DisorderedStructure(ValueError):
    """A structure has partially occupied, vacant or mixed sites. ``sites`` describes each."""

    def __init__(self, source: str, sites: list[str]) -> None:
        shown = "; ".join(sites[:5]) + (f"; … ({len(sites)} sites)" if len(sites) > 5 else "")
        super().__init__(f"{source} is disordered: {shown}. matdx computes ordered structures "
                         f"only: {ORDER_IT}")
        self.sites = sites


def _occupancy_text(occupancies: Mapping[str, float]) -> str:
    parts = [f"{species} {value:g}" for species, value in occupancies.items()]
    total = sum(occupancies.values())
    if total < 1 - FULL:
        parts.append(f"vacant {1 - total:.3g}")
    return ", ".join(parts)


def _is_disordered(occupancies: Mapping[str, float]) -> bool:
    values = [float(v) for v in occupancies.values()]
    return len(values) > 1 or any(abs(v - 1.0) > FULL for v in values)


def _cif_sites(path: Path) -> list[str]:
    """Disordered sites of every data block of a CIF file, named by their labels."""
    from ase.io.cif import parse_cif

    found = []
    for block in parse_cif(str(path)):
        if not block.has_structure():
            continue
        labels = block.get("_atom_site_label")
        species = block.get("_atom_site_type_symbol") or labels
        if species is None:
            continue
        labels = labels or species
        occupancy = block.get("_atom_site_occupancy") or [1.0] * len(species)
        xyz = [block.get(f"_atom_site_fract_{axis}") for axis in "xyz"]
        if any(column is None for column in xyz):
            continue
        positions: dict[tuple[float, ...], list[int]] = {}
        for k, point in enumerate(zip(*xyz, strict=True)):
            key = tuple(round(float(v) % 1.0, 3) % 1.0 for v in point)
            positions.setdefault(key, []).append(k)
        for members in positions.values():
            occupancies: dict[str, float] = {}
            for k in members:
                name = str(species[k])
                occupancies[name] = occupancies.get(name, 0.0) + float(occupancy[k])
            if _is_disordered(occupancies):
                names = "/".join(str(labels[k]) for k in members)
                found.append(f"site {names} ({_occupancy_text(occupancies)})")
    return found


def _atoms_sites(atoms: Any) -> list[str]:
    found = []
    occupancy = atoms.info.get("occupancy")
    if isinstance(occupancy, Mapping):
        for kind, values in occupancy.items():
            if isinstance(values, Mapping) and _is_disordered(values):
                found.append(f"site kind {kind} ({_occupancy_text(values)})")
    for name in ("occupancy", "occupancies"):
        if name in atoms.arrays:
            values = np.asarray(atoms.arrays[name], dtype=float)
            for k in np.flatnonzero(np.abs(values - 1.0) > FULL)[:20]:
                found.append(f"atom {k} ({atoms[k].symbol} {values[k]:g})")
    for k in np.flatnonzero(atoms.numbers == 0)[:20]:
        found.append(f"atom {k} (species X: a vacancy or dummy atom)")
    if len(atoms) > 1 and not found:
        from ase.neighborlist import neighbor_list

        first, second = neighbor_list("ij", atoms, SAME_SITE, self_interaction=False)
        for i, j in zip(first, second, strict=True):
            if i < j and atoms.numbers[i] != atoms.numbers[j]:
                found.append(f"atoms {i} and {j} share one position ({atoms[i].symbol} and "
                             f"{atoms[j].symbol}: a mixed site)")
    return found


def _pymatgen_sites(structure: Any) -> list[str]:
    sites = structure["sites"] if isinstance(structure, Mapping) else \
        [site.as_dict() for site in structure]
    found = []
    for k, site in enumerate(sites):
        occupancies: dict[str, float] = {}
        for species in site.get("species", []):
            name = str(species.get("element", "?"))
            occupancies[name] = occupancies.get(name, 0.0) + float(species.get("occu", 1.0))
        if _is_disordered(occupancies):
            found.append(f"site {k} ({_occupancy_text(occupancies)})")
    return found


def disordered_sites(structure: Any, path: Path | None = None) -> list[str]:
    """Descriptions of the disordered sites of a structure (empty when it is ordered).

    Parameters
    ----------
    structure
        ``ase.Atoms``, a pymatgen ``Structure`` or its ``as_dict()`` form.
    path
        The file it was read from; a CIF file is read again for its site labels.
    """
    if path is not None and path.suffix.lower() == ".cif":
        found = _cif_sites(path)
        if found:
            return found
    from ase import Atoms

    if isinstance(structure, Atoms):  # pymatgen's MSONAtoms included
        return _atoms_sites(structure)
    if isinstance(structure, Mapping):
        return _pymatgen_sites(structure) if "sites" in structure else []
    return _pymatgen_sites(structure)


def check_ordered(structure: Any, source: str, path: Path | None = None) -> None:
    """Raise :class:`DisorderedStructure` naming ``source`` (a field and/or file) if any site
    of ``structure`` is partially occupied, vacant or mixed."""
    sites = disordered_sites(structure, path)
    if sites:
        raise DisorderedStructure(source, sites)
