"""Input generators: protocol level + structure + user parameters → one run's parameters.

Every code's module has an :class:`InputGenerator` (a subclass where the code needs more than
the common steps) in its registry entry. A generator owns the code's **protocols**, named
accuracy levels ``fast``, ``moderate`` and ``precise``: one mapping per level, where
``PARENT`` names a level to inherit from (deep-merged, the child wins). A level holds the code
parameters (``parameters``), a k-point sampling (``kpoints``) and any knob the code's own
steps read (e.g. Quantum ESPRESSO's cutoff factor). The user's parameters are merged over the
protocol's and win; each key they override is reported as a warning in the record.

A generator also answers what recipes ask of a code without naming it: the k-point grid that
keeps strained or displaced copies of a cell comparable (:meth:`InputGenerator.fixed_kpoints`),
the k-points of a band path (:meth:`InputGenerator.band_path`), the settings for accurate
forces (:meth:`InputGenerator.for_forces`), the occupations for a material whose band gap an
earlier calculation found (:meth:`InputGenerator.for_band_gap`) and the record's method section
(:meth:`InputGenerator.method`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ase import Atoms

from matdx.codes.kpoints import kpoint_grid

__all__ = ["LEVELS", "InputGenerator", "InputSet", "Protocol", "deep_merge"]

LEVELS = ("fast", "moderate", "precise")
Protocol = Literal["fast", "moderate", "precise"]


def deep_merge(base: Any, update: Any) -> Any:
    """``update`` merged into a copy of ``base``: mappings merge key by key, anything else in
    ``update`` replaces what was there."""
    if not (isinstance(base, Mapping) and isinstance(update, Mapping)):
        return copy.deepcopy(update)
    merged = {key: copy.deepcopy(value) for key, value in base.items()}
    for key, value in update.items():
        merged[key] = deep_merge(base[key], value) if key in base else copy.deepcopy(value)
    return merged


def _overridden(base: Mapping[str, Any], update: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in update.items():
        where = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            keys += _overridden(base[key], value, f"{where}.")
        elif key in base and base[key] != value:
            keys.append(where)
    return keys


@dataclass(frozen=True)
class InputSet:
    """The complete parameters of one run.

    Attributes
    ----------
    parameters
        Code parameters as the template writes them.
    warnings
        One line per protocol value the user overrode.
    pseudo_dir
        The user's ``pseudo_dir`` (a path of the machine, given to the template's profile,
        not written into the parameters), or None.
    """

    parameters: dict[str, Any]
    warnings: list[str]
    pseudo_dir: str | None


class InputGenerator:
    """Protocols and input steps shared by every code; a code's subclass adds its own.

    Class attributes
    ----------------
    code : str
        The code's name (in error messages).
    levels : dict
        The protocol levels (see the module docstring); empty for codes without protocols.
    occupations_by_band_gap : bool
        Whether :meth:`for_band_gap` chooses the occupations (so a recipe hands it the band
        gap of its relaxation).
    """

    code: ClassVar[str] = ""
    levels: ClassVar[dict[str, Any]] = {}
    occupations_by_band_gap: ClassVar[bool] = False

    def protocol(self, level: str) -> dict[str, Any]:
        """The resolved protocol ``level`` (empty for codes without protocols).

        Raises
        ------
        ValueError
            For an unknown level, or a PARENT cycle.
        """
        if level not in LEVELS:
            raise ValueError(f"protocol: unknown level {level!r}; accepted: {', '.join(LEVELS)}")
        chain: list[str] = []
        name: str | None = level
        while name is not None:
            if name in chain:
                raise ValueError(f"protocol: {self.code} has a PARENT cycle through {name!r}")
            chain.append(name)
            name = (self.levels.get(name) or {}).get("PARENT")
        resolved: dict[str, Any] = {}
        for name in reversed(chain):
            resolved = deep_merge(resolved, {k: v for k, v in (self.levels.get(name) or {}).items()
                                             if k != "PARENT"})
        return resolved

    @staticmethod
    def merge(protocol: Mapping[str, Any], user: Mapping[str, Any] | None
              ) -> tuple[dict[str, Any], list[str]]:
        """The protocol's parameters with the user's merged over them (copies).

        Returns
        -------
        parameters, warnings
            The merged parameters, and one warning per protocol value the user overrode.
        """
        base = protocol.get("parameters") or {}
        user = dict(user or {})
        warnings = [f"parameters.{key} overrides the protocol's value"
                    for key in _overridden(base, user)]
        return deep_merge(base, user), warnings

    def parameters(self, level: str, user: Mapping[str, Any] | None, atoms: Atoms,
                   *, kpoints: bool = True) -> InputSet:
        """The complete parameters of one run on ``atoms`` at protocol ``level``.

        ``pseudo_dir`` in the user's parameters is taken out (it belongs to the machine's
        profile, not to the input files). With ``kpoints`` the protocol's k-point sampling is
        added unless the user gave one.
        """
        user = dict(user or {})
        pseudo_dir = user.pop("pseudo_dir", None)
        settings = self.protocol(level)
        parameters, warnings = self.merge(settings, user)
        if kpoints and "kpoints" in settings and "kpoints" not in user:
            parameters["kpoints"] = dict(settings["kpoints"])
        parameters = self.complete(atoms, parameters, settings, pseudo_dir)
        return InputSet(parameters, warnings, pseudo_dir)

    def complete(self, atoms: Atoms, parameters: dict[str, Any], protocol: Mapping[str, Any],
                 pseudo_dir: str | None) -> dict[str, Any]:
        """The code's own last step (e.g. cutoffs from the pseudopotentials); none here."""
        return parameters

    def fixed_kpoints(self, level: str, parameters: Mapping[str, Any] | None,
                      reference: Atoms) -> dict[str, Any]:
        """``parameters`` with the k-point grid fixed to the one their (or the protocol's)
        density gives for ``reference``, so that strained or scaled copies of it (EOS points,
        elastic strains, phonon supercells of one cell) are all computed on the same grid and
        their energies stay comparable. A ``density`` (points per Å⁻¹) works for every code
        with k-points; a code with its own density convention turns it into a grid in
        :meth:`grid_from`. An explicit ``grid`` or a band path is kept."""
        parameters = dict(parameters or {})
        settings = self.protocol(level)
        kpoints = dict(
            parameters.get("kpoints")
            or settings.get("kpoints")
            or (settings.get("parameters") or {}).get("kpoints")
            or {}
        )
        if "grid" in kpoints or "line_density" in kpoints:
            return parameters
        if "density" in kpoints:
            grid = kpoint_grid(reference.cell, float(kpoints.pop("density")), reference.pbc)
        else:
            grid = self.grid_from(kpoints, reference)
            if grid is None:
                return parameters
        kpoints["grid"] = [int(n) for n in grid]
        parameters["kpoints"] = self.fixed_grid(kpoints)
        return parameters

    def grid_from(self, kpoints: dict[str, Any], reference: Atoms) -> tuple[int, ...] | None:
        """The grid of a code-specific density in ``kpoints`` (popped), or None."""
        return None

    def fixed_grid(self, kpoints: dict[str, Any]) -> dict[str, Any]:
        """The k-point parameters of a fixed ``grid`` (a code may add its shift)."""
        return kpoints

    def band_path(self, npoints: int) -> dict[str, Any]:
        """The k-point parameters of a run along the cell's high-symmetry path with about
        ``npoints`` points in all."""
        return {"path": None, "npoints": npoints}

    def for_forces(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """``parameters`` for forces of a few meV/Å (finite displacements); the user's
        values are kept."""
        return copy.deepcopy(dict(parameters))

    def for_band_gap(self, parameters: Mapping[str, Any] | None, band_gap: float | None
                     ) -> dict[str, Any]:
        """``parameters`` for a material in which an earlier calculation of the same recipe
        (its relaxation) found ``band_gap`` (eV; 0 for a metal, None when unknown).

        A code whose protocols smear the occupations for metals chooses fixed occupations
        for a semiconductor or insulator here; an occupation scheme the user gave is kept.
        The common step changes nothing.
        """
        return copy.deepcopy(dict(parameters or {}))

    def method(self, result: Any, level: str) -> dict[str, Any]:
        """The record's method section of a program's
        :class:`~matdx.codes.results.CalculationResult` run at protocol ``level``."""
        parameters = result.parameters or {}
        return {
            "code": result.code,
            "code_version": result.code_version,
            "calculation": result.calculation,
            "pseudopotentials": [{k: str(v) for k, v in p.items() if v is not None}
                                 for p in result.pseudopotentials],
            "parameters": {**parameters, "protocol": level},
        }
