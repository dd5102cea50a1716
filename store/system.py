"""The system section of a record: OPTIMADE structure fields computed from plain arrays."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from functools import reduce
from typing import Any

import numpy as np

__all__ = ["optimade_structure", "structure_hash"]

_ANONYMOUS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]


def _formula(counts: dict[str, int], order: Sequence[str]) -> str:
    return "".join(f"{el}{counts[el] if counts[el] != 1 else ''}" for el in order)


def _anonymous_symbols(n: int) -> list[str]:
    """A, B, ..., Z, Aa, Ba, ... as OPTIMADE orders anonymous element names."""
    names = []
    for i in range(n):
        first, rest = _ANONYMOUS[i % 26], i // 26
        names.append(first + (chr(ord("a") + rest - 1) if rest else ""))
    return names


def structure_hash(
    cell: np.ndarray, positions: np.ndarray, symbols: Sequence[str], pbc: Sequence[bool]
) -> str:
    """sha256 of the structure as given: lattice (Å) and wrapped fractional positions, both
    rounded to 1e-5, sites sorted. Equal structures written in the same setting hash equal;
    it is not invariant under a change of cell or origin."""
    cell = np.asarray(cell, dtype=float)
    positions = np.asarray(positions, dtype=float)
    periodic = np.asarray(pbc, dtype=bool)
    if abs(np.linalg.det(cell)) > 1e-12:
        frac = np.round(np.linalg.solve(cell.T, positions.T).T, 5)
        frac[:, periodic] %= 1.0  # after rounding, so 0.999999 and 0.0 agree
    else:  # a molecule without a cell
        frac = np.round(positions, 5)
    sites = sorted(zip(symbols, map(tuple, frac.tolist()), strict=True))
    text = repr((np.round(cell, 5).tolist(), periodic.tolist(), sites))
    return hashlib.sha256(text.encode()).hexdigest()


def optimade_structure(
    cell: np.ndarray, positions: np.ndarray, symbols: Sequence[str], pbc: Sequence[bool]
) -> dict[str, Any]:
    """The OPTIMADE structure fields of a structure, plus ``structure_hash``.

    Parameters
    ----------
    cell : (3, 3) Å, lattice vectors as rows
    positions : (n_sites, 3) Å, Cartesian
    symbols : (n_sites,) chemical symbols
    pbc : (3,) bool, periodic along each lattice vector

    Returns
    -------
    dict
        ``lattice_vectors``, ``cartesian_site_positions``, ``species_at_sites``, ``species``,
        ``dimension_types``, ``nperiodic_dimensions``, ``nsites``, ``elements``, ``nelements``,
        ``elements_ratios``, ``chemical_formula_reduced``, ``chemical_formula_hill``,
        ``chemical_formula_anonymous``, ``structure_hash``, named as in the OPTIMADE spec.
    """
    symbols = [str(s) for s in symbols]
    counts = Counter(symbols)
    elements = sorted(counts)
    divisor = reduce(math.gcd, counts.values())
    reduced = {el: n // divisor for el, n in counts.items()}
    if "C" in reduced:
        hill_order = [
            "C",
            *(["H"] if "H" in reduced else []),
            *(el for el in elements if el not in ("C", "H")),
        ]
    else:
        hill_order = elements
    by_abundance = sorted(reduced.values(), reverse=True)
    anonymous = "".join(
        f"{name}{n if n != 1 else ''}"
        for name, n in zip(_anonymous_symbols(len(by_abundance)), by_abundance, strict=True)
    )
    total = len(symbols)
    return {
        "lattice_vectors": np.asarray(cell, dtype=float).tolist(),
        "cartesian_site_positions": np.asarray(positions, dtype=float).tolist(),
        "species_at_sites": symbols,
        "species": [
            {"name": el, "chemical_symbols": [el], "concentration": [1.0]} for el in elements
        ],
        "dimension_types": [int(bool(p)) for p in pbc],
        "nperiodic_dimensions": int(sum(bool(p) for p in pbc)),
        "nsites": total,
        "elements": elements,
        "nelements": len(elements),
        "elements_ratios": [counts[el] / total for el in elements],
        "chemical_formula_reduced": _formula(reduced, elements),
        "chemical_formula_hill": _formula(reduced, hill_order),
        "chemical_formula_anonymous": anonymous,
        "structure_hash": structure_hash(cell, positions, symbols, pbc),
    }
