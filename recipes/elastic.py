"""Elastic constants from stress–strain: the full Cij (GPa), bulk and shear moduli.

The flow is ``relax (cell) → 24 strained copies → fit``: each of the six Voigt strains
e_j ∈ {−2δ, −δ, +δ, +2δ} is applied to the relaxed cell (engineering shear strains, so
e_4 = 2ε_yz); the stress of each copy is computed (with the atoms relaxed inside the strained
cell when the cell has more than one atom: relaxed-ion constants), and C_ij is the slope of
σ_i against e_j from a linear least-squares fit (the intercept absorbs residual stress), in ASE's
sign convention (tension positive), converted from eV/Å³ to GPa and symmetrised.

Voigt–Reuss–Hill averages give the bulk and shear moduli; the crystal is mechanically stable
(Born) when C is positive definite.

Uncertainty (``C_err_GPa``, ``C11_GPa_err``, ...). The slope of a finite strain differs from
the zero-strain constant (Mishin's Cu potential: C11 = 170.43 GPa from strains up to 1 %,
169.92 up to 0.1 %), and by an amount the least-squares residual does not show. The fit
therefore takes the symmetric pairs ±δ and ±2δ separately: C(δ) and C(2δ), and reports the
zero-strain extrapolation C = 2·C(δ) − C(2δ) with the error

    σ(C_ij) = sqrt( (C(2δ) − C(δ))² + ((C_ij − C_ji)/2)² ),

the size of the extrapolation (which covers the remaining bias whether the strain dependence
is linear or quadratic in δ) and the asymmetry of the unsymmetrised matrix. The default
δ = 0.1 % (largest strain 0.2 %) keeps that systematic part well below 0.1 % for metals while
stresses stay far above the codes' numerical noise.

Both cases occur. A slope from a symmetric pair ±δ drifts as δ² for a smooth potential
(Mishin's Cu, C44: 76.2090, 76.2066, 76.2060, 76.2059 GPa at δ = 0.2, 0.1, 0.05, 0.025 %;
the linear extrapolation, 76.2042 ± 0.0024, overshoots the limit 76.2058 by two thirds of its
error), but linearly in δ when the potential is not analytic at the equilibrium: Mishin's
embedding function changes form at the equilibrium density ρ̄ = 1 (its third derivative
jumps from −7.7 to −3.6 in the tabulated file), which volume changes cross and shears do not,
so C11 and C12 drift linearly (169.923, 169.895, 169.882 at δ = 0.1, 0.05, 0.025 %) and the
extrapolation removes it. Not in the error, because measured to be far smaller at the
defaults (same potential): the cell relaxation's residual pressure (−0.2 MPa; C44 moves
1.45 GPa per GPa of pressure, so 0.0003 GPa), a one-atom cell's missing internal relaxation
(none to do), and the interpolation of a tabulated potential (Debian's
``Cu_mishin1.eam.alloy`` re-tabulated on every 2nd, 4th and 8th point gives C44 0.00002,
0.0006 and 0.005 GPa lower, an error falling as the cube of the spacing: 1e-5 GPa for the
file itself).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress
from ase.units import GPa
from pydantic import Field

from matdx.codes.registry import code_info
from matdx.recipes.calculation import fixed_kpoints, for_band_gap
from matdx.recipes.derived import derived_method
from matdx.recipes.maker import CodeMaker
from matdx.recipes.relax import relax, relaxed_band_gap, relaxed_first
from matdx.recipes.static import single_point
from matdx.workflows import Flow, job

__all__ = ["ElasticMaker", "elastic_moduli", "fit_elastic", "strained", "strained_stress"]

VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def strained(atoms: Atoms, component: int, strain: float) -> Atoms:
    """A copy of ``atoms`` with Voigt strain ``strain`` on ``component`` (0–5), atoms moved
    with the cell. Shear components are engineering strains (e_4 = 2ε_yz)."""
    i, j = VOIGT_PAIRS[component]
    epsilon = np.zeros((3, 3))
    if i == j:
        epsilon[i, i] = strain
    else:
        epsilon[i, j] = epsilon[j, i] = strain / 2.0
    copy = atoms.copy()
    copy.set_cell(atoms.cell.array @ (np.eye(3) + epsilon), scale_atoms=True)
    return copy


@job
def strained_stress(
    *,
    atoms: Atoms,
    component: int,
    strain: float,
    code: str = "emt",
    parameters: dict[str, Any] | None = None,
    protocol: str = "moderate",
    applied: dict[str, int] | None = None,
    band_gap: float | None = None,
) -> dict[str, Any]:
    """Stress (eV/Å³, ASE sign) of ``atoms`` under one Voigt strain, on the k-point grid of the
    unstrained cell, with the occupations the code chooses for ``band_gap`` (eV, found by the
    relaxation; None: the protocol's); the atoms relax inside the strained cell when there is
    more than one."""
    parameters = fixed_kpoints(code, protocol, for_band_gap(code, parameters, band_gap), atoms)
    deformed = strained(atoms, component, strain)
    if len(atoms) > 1:
        output = relax.original(
            atoms=deformed,
            code=code,
            parameters=parameters,
            protocol=protocol,
            applied=applied,
            relax_cell=False,
        )
    else:
        output = single_point(deformed, code, parameters, protocol, applied)
    output["component"] = component
    output["strain"] = float(strain)
    return output


def elastic_moduli(c: np.ndarray) -> dict[str, Any]:
    """Voigt, Reuss and Hill bulk and shear moduli (GPa) and the Born stability of C (GPa)."""
    c = np.asarray(c, dtype=float)
    k_voigt = (c[0, 0] + c[1, 1] + c[2, 2] + 2 * (c[0, 1] + c[0, 2] + c[1, 2])) / 9.0
    g_voigt = (
        (c[0, 0] + c[1, 1] + c[2, 2])
        - (c[0, 1] + c[0, 2] + c[1, 2])
        + 3 * (c[3, 3] + c[4, 4] + c[5, 5])
    ) / 15.0
    eigenvalues = np.linalg.eigvalsh(c)
    stable = bool(eigenvalues.min() > 0)
    if abs(np.linalg.det(c)) > 1e-12:
        s = np.linalg.inv(c)
        k_reuss = 1.0 / ((s[0, 0] + s[1, 1] + s[2, 2]) + 2 * (s[0, 1] + s[0, 2] + s[1, 2]))
        g_reuss = 15.0 / (
            4 * (s[0, 0] + s[1, 1] + s[2, 2])
            - 4 * (s[0, 1] + s[0, 2] + s[1, 2])
            + 3 * (s[3, 3] + s[4, 4] + s[5, 5])
        )
    else:
        k_reuss = g_reuss = float("nan")
    return {
        "bulk_modulus_voigt_GPa": float(k_voigt),
        "bulk_modulus_reuss_GPa": float(k_reuss),
        "bulk_modulus_GPa": float((k_voigt + k_reuss) / 2),
        "shear_modulus_voigt_GPa": float(g_voigt),
        "shear_modulus_reuss_GPa": float(g_reuss),
        "shear_modulus_GPa": float((g_voigt + g_reuss) / 2),
        "mechanically_stable": stable,
        "min_eigenvalue_GPa": float(eigenvalues.min()),
    }


def _slopes(points: list[dict[str, Any]], magnitude: float | None,
            with_residual: bool = False) -> Any:
    """C (6, 6), GPa, column j the least-squares slope of the Voigt stresses against e_j over
    the strains ±``magnitude`` (all strains if None); with the largest residual (GPa)."""
    c = np.zeros((6, 6))
    residual = 0.0
    for j in range(6):
        mine = [p for p in points if int(p["component"]) == j
                and (magnitude is None or abs(abs(float(p["strain"])) - magnitude) < 1e-12)]
        if len(mine) < 2:
            raise ValueError(f"points: component {j} has {len(mine)} strained copies at "
                             f"strain ±{magnitude}, need 2")
        strains = np.array([float(p["strain"]) for p in mine])
        stresses = np.array([full_3x3_to_voigt_6_stress(np.asarray(p["stress"])) for p in mine])
        design = np.column_stack([strains, np.ones_like(strains)])
        solution, *_ = np.linalg.lstsq(design, stresses, rcond=None)
        c[:, j] = solution[0] / GPa
        residual = max(residual, float(np.abs(design @ solution - stresses).max() / GPa))
    return (c, residual) if with_residual else c


@job(retries=0)
def fit_elastic(points: list[dict[str, Any]], structure: Atoms) -> dict[str, Any]:
    """C_ij (GPa) from the stresses of the strained copies, and the moduli.

    Returns
    -------
    dict
        ``C_GPa`` (6, 6) in Voigt order xx, yy, zz, yz, xz, xy, extrapolated to zero strain,
        and its error ``C_err_GPa`` (6, 6) (module docstring); ``C11_GPa``, ``C11_GPa_err``,
        ...; the slopes of the small and large pairs and of all strains (``C_GPa_*``); the
        moduli of :func:`elastic_moduli`; the linear fit's largest residual
        ``fit_residual_GPa``; the data: ``components`` (n,), ``strains`` (n,) and
        ``stresses_GPa`` (n, 6) Voigt, ASE sign.

    Raises
    ------
    ValueError
        When a component lacks a pair of strains, or all strains have one magnitude.
    """
    strains = [float(p["strain"]) for p in points]
    magnitudes = sorted({round(abs(e), 12) for e in strains})
    if len(magnitudes) < 2:
        raise ValueError(f"points: strains {sorted(set(strains))} have one magnitude; the "
                         "strain sensitivity needs two (±δ and ±2δ)")
    small, large = _slopes(points, magnitudes[0]), _slopes(points, magnitudes[1])
    whole, residual = _slopes(points, None, with_residual=True)
    ratio = magnitudes[0] / (magnitudes[1] - magnitudes[0])
    raw = small + ratio * (small - large)  # zero-strain extrapolation, linear in δ
    c = 0.5 * (raw + raw.T)
    drift = max(1.0, ratio) * (large - small)  # at least the extrapolation's size
    error = np.sqrt(0.5 * (drift**2 + drift.T**2) + (0.5 * (raw - raw.T)) ** 2)
    stresses = np.array([full_3x3_to_voigt_6_stress(np.asarray(p["stress"])) / GPa
                         for p in points])
    named = {f"C{i + 1}{j + 1}_GPa": float(c[i, j]) for i in range(6) for j in range(i, 6)}
    errors = {f"C{i + 1}{j + 1}_GPa_err": float(error[i, j])
              for i in range(6) for j in range(i, 6)}
    return {
        "C_GPa": c,
        "C_err_GPa": error,
        "C_GPa_small_strain": 0.5 * (small + small.T),
        "C_GPa_large_strain": 0.5 * (large + large.T),
        "C_GPa_all_strains": 0.5 * (whole + whole.T),
        "strain_magnitudes": magnitudes[:2],
        **named,
        **errors,
        **elastic_moduli(c),
        "fit_residual_GPa": residual,
        "components": np.array([int(p["component"]) for p in points]),
        "strains": np.array(strains),
        "stresses_GPa": stresses,
        "structure": structure,
        "data": {"kind": "elastic", "components": [int(p["component"]) for p in points],
                 "strains": strains, "stresses_GPa": stresses, "C_GPa": c,
                 "C_err_GPa": error, "fit_residual_GPa": residual,
                 "strain_magnitudes": magnitudes[:2]},
        "method": derived_method(
            [p.get("method") for p in points], "elastic-fit",
            {"strains": sorted({float(p["strain"]) for p in points})},
        ),
    }


class ElasticMaker(CodeMaker):
    """Elastic constants of each structure from stress–strain."""

    name: ClassVar[str] = "elastic"
    description: ClassVar[str] = "Cij (GPa) from stress-strain, bulk and shear moduli"
    summary: ClassVar[tuple[str, ...]] = (
        "C11_GPa",
        "C11_GPa_err",
        "C12_GPa",
        "C12_GPa_err",
        "C44_GPa",
        "C44_GPa_err",
        "bulk_modulus_GPa",
        "shear_modulus_GPa",
        "mechanically_stable",
    )

    strain: float = Field(0.001, gt=0, le=0.05, description="largest Voigt strain is 2×this")
    relax_first: bool = True

    def check(self, atoms: Atoms, *, local: bool = True) -> None:
        if not atoms.pbc.all():
            raise ValueError("structure: elastic constants need a periodic cell")
        super().check(atoms, local=local)
        if len(atoms) > 1 and "relax" not in code_info(self.code).recipes:
            # the strained copies relax their atoms
            raise ValueError(f"code: {self.code} cannot relax the atoms of strained cells")

    def make(self, atoms: Atoms, start: Any = None) -> Flow:
        settings = self.code_settings()
        jobs, reference = relaxed_first(atoms if start is None else start, settings,
                                        self.relax_first)
        points = [
            strained_stress(atoms=reference, component=j, strain=k * self.strain,
                            **relaxed_band_gap(jobs, self.code), **settings)
            for j in range(6)
            for k in (-2, -1, 1, 2)
        ]
        stresses = [
            {
                "component": p.output["component"],
                "strain": p.output["strain"],
                "stress": p.output["stress"],
                "method": p.output["method"],
            }
            for p in points
        ]
        fitting = fit_elastic(stresses, reference)
        return Flow(
            [*jobs, *points, fitting],
            output=fitting.output,
            name=f"elastic {atoms.get_chemical_formula()}",
        )
