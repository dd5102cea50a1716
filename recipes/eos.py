"""Equation of state: energies at scaled volumes and a Birch–Murnaghan fit.

The flow is ``relax → N points at volumes V_ref·(1 ± range) → fit``. When the lowest energy
lies at an end of the sampled range, the fit job does not fit: it returns a
``Response(replace=...)`` with three more points beyond that end and a new fit job, whose
output becomes the fit's output, up to ``max_extensions`` times.

Third-order Birch–Murnaghan equation of state, with η = (V0/V)^(2/3)::

    E(V) = E0 + 9 V0 B0 / 16 · [ (η − 1)³ B0' + (η − 1)² (6 − 4η) ]

V in Å³, E in eV, B0 reported in GPa (1 eV/Å³ = 160.21766 GPa), B0' dimensionless.

Uncertainty of B0 (:func:`bulk_modulus_estimate`). The fitted B0 depends on the volume range:
an E(V) that is not exactly of Birch–Murnaghan form (tabulated EAM potentials in particular)
gives a B0 that drifts with the range, an error the fit's covariance does not see (Mishin's Cu
potential: 141.5 GPa over ±8 %, 138.7 over ±1 %, 138.4 at small strains). The recipe
therefore fits twice, over all points (range ±r about V0, ``B0_GPa_full_range``) and over
the half of the points nearest V0, at least five (range ±r_h, ``B0_GPa_half_range``), and
reports the extrapolation to zero range, linear in the range,
B0 = B(r_h) − ρ·(B(r) − B(r_h)) with ρ = r_h/(r − r_h), and the error

    σ(B0) = sqrt( (max(1, ρ)·(B(r) − B(r_h)))² + ((1 + ρ)·σ_fit(r_h))² + (ρ·σ_fit(r))² ),

which covers the drift whether it is linear in the range (then the extrapolation is exact)
or quadratic (then its bias, about 2/3 of the drift, is inside the error). The default range
(±4 %, 11 points) keeps that systematic part below 1 % for metals' potentials; with fewer
than seven points the recipe reports the full-range fit with its statistical error only, and
a warning.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.units import GPa
from pydantic import Field
from scipy.optimize import curve_fit

from matdx.recipes.calculation import fixed_kpoints, for_band_gap
from matdx.recipes.derived import derived_method
from matdx.recipes.maker import CodeMaker
from matdx.recipes.relax import relaxed_band_gap, relaxed_first
from matdx.recipes.static import single_point
from matdx.workflows import Flow, Response, job

__all__ = ["EOSMaker", "birch_murnaghan", "bulk_modulus_estimate", "eos_point", "fit",
           "fit_birch_murnaghan"]

EXTENSION_POINTS = 3
MIN_FIT_POINTS = 5


def birch_murnaghan(
    volume: np.ndarray, e0: float, v0: float, b0: float, b0_prime: float
) -> np.ndarray:
    """Energy (eV) at ``volume`` (Å³) for the parameters (eV, Å³, eV/Å³, 1)."""
    eta = (v0 / np.asarray(volume, dtype=float)) ** (2.0 / 3.0)
    return e0 + 9.0 * v0 * b0 / 16.0 * (
        (eta - 1.0) ** 3 * b0_prime + (eta - 1.0) ** 2 * (6.0 - 4.0 * eta)
    )


def fit_birch_murnaghan(volumes: np.ndarray, energies: np.ndarray) -> dict[str, float]:
    """Least-squares Birch–Murnaghan fit, started from a parabola through the points.

    Parameters
    ----------
    volumes : (n,) Å³
    energies : (n,) eV

    Returns
    -------
    dict
        ``E0`` (eV), ``V0`` (Å³), ``B0`` (eV/Å³), ``B0_GPa``, ``B0_prime``, standard errors
        ``*_stderr`` from the fit's covariance, ``covariance`` (4, 4) of (E0 eV, V0 Å³,
        B0 eV/Å³, B0'), and ``rms_residual`` (eV).

    Raises
    ------
    ValueError
        With fewer than 5 points, or when the points have no minimum (not convex).
    """
    volumes = np.asarray(volumes, dtype=float)
    energies = np.asarray(energies, dtype=float)
    if volumes.shape != energies.shape or volumes.ndim != 1:
        raise ValueError(
            f"volumes, energies: need equal 1-d shapes, got {volumes.shape} and {energies.shape}"
        )
    if volumes.size < MIN_FIT_POINTS:
        raise ValueError(
            f"volumes: a Birch–Murnaghan fit needs at least 5 points, got {volumes.size}"
        )
    a, b, c = np.polyfit(volumes, energies, 2)
    if a <= 0:
        raise ValueError("energies: E(V) is not convex over the sampled volumes")
    v0 = -b / (2 * a)
    guess = (a * v0**2 + b * v0 + c, v0, 2 * a * v0, 4.0)
    params, covariance = curve_fit(birch_murnaghan, volumes, energies, p0=guess, maxfev=20000)
    errors = np.sqrt(np.clip(np.diag(covariance), 0, None))
    residual = energies - birch_murnaghan(volumes, *params)
    e0, v0, b0, b0_prime = (float(p) for p in params)
    return dict(
        E0=e0,
        V0=v0,
        B0=b0,
        B0_GPa=b0 / GPa,
        B0_prime=b0_prime,
        E0_stderr=float(errors[0]),
        V0_stderr=float(errors[1]),
        B0_GPa_stderr=float(errors[2] / GPa),
        B0_prime_stderr=float(errors[3]),
        covariance=np.asarray(covariance, dtype=float),
        rms_residual=float(np.sqrt(np.mean(residual**2))),
    )


def bulk_modulus_estimate(volumes: np.ndarray, energies: np.ndarray) -> dict[str, Any]:
    """The Birch–Murnaghan fit of all points, and B0 (GPa) with an error that covers its
    dependence on the fitted volume range (see the module docstring).

    Parameters
    ----------
    volumes : (n,) Å³
    energies : (n,) eV

    Returns
    -------
    dict
        :func:`fit_birch_murnaghan` of all points, with ``B0_GPa`` replaced by the
        range-extrapolated value and ``B0_GPa_err`` its error; ``B0_GPa_full_range`` and
        ``B0_GPa_half_range`` (the two fits), ``fit_range`` and ``half_range`` (relative
        half-widths about V0), and ``warnings``.
    """
    volumes = np.asarray(volumes, dtype=float)
    energies = np.asarray(energies, dtype=float)
    full = fit_birch_murnaghan(volumes, energies)
    distance = np.abs(volumes / full["V0"] - 1.0)
    keep = max(MIN_FIT_POINTS, volumes.size // 2)
    inside = np.sort(np.argsort(distance, kind="stable")[:keep])
    span, half_span = float(distance.max()), float(distance[inside].max())
    result: dict[str, Any] = {**full, "B0_GPa_full_range": full["B0_GPa"], "fit_range": span,
                              "half_range": half_span, "warnings": []}
    if keep > volumes.size - 2 or half_span >= span:
        result.update(B0_GPa_half_range=None, B0_GPa_err=full["B0_GPa_stderr"])
        result["warnings"].append(
            f"points: {volumes.size} volumes, too few to fit a narrower range of at least "
            f"{MIN_FIT_POINTS} and measure the fit-range sensitivity of B0; B0_GPa_err is the "
            "fit's statistical error only")
        return result
    half = fit_birch_murnaghan(volumes[inside], energies[inside])
    drift = full["B0_GPa"] - half["B0_GPa"]
    ratio = half_span / (span - half_span)  # extrapolation to zero range, linear in range
    b0_gpa = half["B0_GPa"] - ratio * drift
    result.update(
        B0_GPa=b0_gpa,
        B0=b0_gpa * GPa,
        B0_GPa_half_range=half["B0_GPa"],
        B0_GPa_err=float(np.sqrt((max(1.0, ratio) * drift) ** 2
                                 + ((1 + ratio) * half["B0_GPa_stderr"]) ** 2
                                 + (ratio * full["B0_GPa_stderr"]) ** 2)),
    )
    return result


def _scaled(structure: Atoms, volume_factor: float) -> Atoms:
    scaled = structure.copy()
    scaled.set_cell(structure.cell.array * volume_factor ** (1.0 / 3.0), scale_atoms=True)
    return scaled


@job
def eos_point(*, atoms: Atoms, volume_factor: float, code: str = "emt",
              parameters: dict[str, Any] | None = None, protocol: str = "moderate",
              applied: dict[str, int] | None = None, band_gap: float | None = None
              ) -> dict[str, Any]:
    """Static calculation of ``atoms`` with its volume scaled by ``volume_factor``, on the
    k-point grid of the unscaled ``atoms`` (a grid that changed with the volume would put
    steps into E(V)), with the occupations the code chooses for ``band_gap`` (eV, found by
    the relaxation; None: the protocol's)."""
    parameters = fixed_kpoints(code, protocol, for_band_gap(code, parameters, band_gap), atoms)
    output = single_point(_scaled(atoms, volume_factor), code, parameters, protocol, applied)
    output["volume_factor"] = float(volume_factor)
    return output


@job(retries=0)
def fit(points: list[dict[str, Any]], structure: Atoms, code_settings: dict[str, Any],
        step: float = 0.02, extensions_left: int = 2) -> dict[str, Any] | Response:
    """Fit E(V) of ``points`` (dicts with ``volume`` in Å³ and ``energy`` in eV).

    When the lowest energy is at an end of the range and ``extensions_left`` > 0, returns a
    ``Response`` replacing this job by more points beyond that end (computed with
    ``code_settings``: code, parameters, protocol) and a new fit.

    Returns
    -------
    dict
        E0 (eV), V0 (Å³), B0_GPa ± B0_GPa_err (:func:`bulk_modulus_estimate`), B0_prime with
        standard errors, per-atom E0 and V0, the sampled ``volumes`` and ``energies``, the
        structure scaled to V0, and ``data`` (:class:`matdx.store.result_models.EOSData`).
    """
    points = sorted(points, key=lambda p: float(p["volume"]))
    volumes = np.array([float(p["volume"]) for p in points])
    energies = np.array([float(p["energy"]) for p in points])
    lowest = int(np.argmin(energies))
    edge = None if 0 < lowest < len(points) - 1 else ("low" if lowest == 0 else "high")
    reference = structure.get_volume()
    if edge is not None and extensions_left > 0:
        direction = -1.0 if edge == "low" else 1.0
        start = (volumes[0] if edge == "low" else volumes[-1]) / reference
        factors = [start + direction * step * k for k in range(1, EXTENSION_POINTS + 1)]
        if min(factors) <= 0.3:
            raise ValueError(f"points: no minimum found down to {min(factors):.2f} V_ref")
        extra = [eos_point(atoms=structure, volume_factor=f, **code_settings) for f in factors]
        known = [{"volume": p["volume"], "energy": p["energy"], "method": p.get("method")}
                 for p in points]
        refit = fit(known + [p.output for p in extra], structure, code_settings, step,
                    extensions_left - 1)
        return Response(output={"extended": edge, "volumes": volumes, "energies": energies},
                        replace=Flow([*extra, refit], output=refit.output))
    result = bulk_modulus_estimate(volumes, energies)
    n = len(structure)
    return {
        **result,
        "E0_per_atom": result["E0"] / n,
        "V0_per_atom": result["V0"] / n,
        "minimum_bracketed": edge is None,
        "volumes": volumes,
        "energies": energies,
        "nsites": n,
        "structure": _scaled(structure, result["V0"] / reference),
        "data": {
            "kind": "eos", "volumes_A3": volumes, "energies_eV": energies,
            "E0_eV": result["E0"], "V0_A3": result["V0"], "B0_GPa": result["B0_GPa"],
            "B0_GPa_err": result["B0_GPa_err"],
            "B0_GPa_full_range": result["B0_GPa_full_range"],
            "B0_GPa_half_range": result["B0_GPa_half_range"],
            "B0_prime": result["B0_prime"], "covariance": result["covariance"],
            "rms_residual_eV": result["rms_residual"],
        },
        "method": derived_method([p.get("method") for p in points], "eos-fit",
                                 {"fit": "birch-murnaghan-3"}),
    }


class EOSMaker(CodeMaker):
    """Equation of state of each structure (optionally relaxed first)."""

    name: ClassVar[str] = "eos"
    description: ClassVar[str] = "energy–volume curve and Birch–Murnaghan fit (V0, E0, B0, B0')"
    summary: ClassVar[tuple[str, ...]] = ("V0_per_atom", "E0_per_atom", "B0_GPa", "B0_GPa_err",
                                          "B0_prime",
                                          "minimum_bracketed")

    points: int = Field(11, ge=7, le=101,
                        description="volumes sampled (9 or more measure the range sensitivity)")
    volume_range: float = Field(0.04, gt=0, lt=0.5,
                                description="volumes from V(1 - range) to V(1 + range)")
    relax_first: bool = True
    max_extensions: int = Field(2, ge=0, le=10)

    def check(self, atoms: Atoms, *, local: bool = True) -> None:
        if not atoms.pbc.all():
            raise ValueError("structure: an equation of state needs a periodic cell")
        super().check(atoms, local=local)

    def make(self, atoms: Atoms, start: Any = None) -> Flow:
        settings = self.code_settings()
        jobs, reference = relaxed_first(atoms if start is None else start, settings,
                                        self.relax_first)
        settings.update(relaxed_band_gap(jobs, self.code))
        factors = np.linspace(1 - self.volume_range, 1 + self.volume_range, self.points)
        points = [eos_point(atoms=reference, volume_factor=float(f), **settings)
                  for f in factors]
        fitting = fit([p.output for p in points], reference, settings,
                      step=float(factors[1] - factors[0]), extensions_left=self.max_extensions)
        return Flow([*jobs, *points, fitting], output=fitting.output,
                    name=f"eos {atoms.get_chemical_formula()}")
