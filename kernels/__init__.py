"""Numba kernels for trajectory and DFT post-processing: numpy arrays in, numpy arrays out.

One concept per module:

========================  ==============================================================
``cells``                 cell validation, volume, perpendicular widths, (un)wrapping
``neighbors``             cell-list neighbour search and coordination numbers
``rdf``                   total and partial g(r), running coordination number
``correlation``           all-origin autocorrelations by FFT (shared by MSD and VACF)
``msd``                   mean squared displacement and diffusion coefficient
``vacf``                  velocity autocorrelation and vibrational DOS
``structure_factor``      S(q) from positions and from g(r)
``angles``                bond-angle distribution
``dos``                   smeared electronic DOS
========================  ==============================================================

Units are Å, fs, eV, THz and Å⁻¹ throughout; every result is float64. Importing this
package is cheap: the public names below are resolved on first access, and each kernel is
compiled (or loaded from numba's on-disk cache) on its first call, never at import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "as_cell": "cells",
    "cell_volume": "cells",
    "max_cutoff": "cells",
    "perpendicular_widths": "cells",
    "unwrap_positions": "cells",
    "wrap_positions": "cells",
    "NeighborList": "neighbors",
    "coordination_numbers": "neighbors",
    "neighbor_list": "neighbors",
    "RDFAccumulator": "rdf",
    "RDFResult": "rdf",
    "radial_distribution": "rdf",
    "running_coordination_number": "rdf",
    "DiffusionCoefficient": "msd",
    "MSDResult": "msd",
    "diffusion_coefficient": "msd",
    "mean_squared_displacement": "msd",
    "VACFResult": "vacf",
    "velocity_autocorrelation": "vacf",
    "vibrational_dos": "vacf",
    "StructureFactorAccumulator": "structure_factor",
    "StructureFactorResult": "structure_factor",
    "static_structure_factor": "structure_factor",
    "structure_factor_from_rdf": "structure_factor",
    "AngleDistribution": "angles",
    "bond_angle_distribution": "angles",
    "smeared_dos": "dos",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
