"""Electronic band structure: SCF, bands along a high-symmetry path, band gap and DOS.

One job runs two program calculations in its run directory: an SCF on the protocol's k-point
mesh (``scf/``) and a non-self-consistent run along the high-symmetry path of the cell
(``bands/``, ASE's band paths, the Setyawan–Curtarolo conventions that pymatgen's
``HighSymmKpath`` also follows) that reads the SCF charge density. The band gap takes the
valence-band maximum and conduction-band minimum over both k-point sets relative to the SCF
Fermi level (direct or indirect, with where the edges lie); the density of states is the
Gaussian-smeared DOS of the SCF mesh eigenvalues with their k-point weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from pydantic import Field

from matdx.codes.bandgap import band_gap
from matdx.codes.registry import code_info
from matdx.kernels.dos import smeared_dos
from matdx.recipes.calculation import run_program
from matdx.recipes.maker import CodeMaker
from matdx.workflows import Flow, job

__all__ = ["BandsMaker", "band_structure"]


@job
def band_structure(
    *,
    atoms: Atoms,
    code: str = "espresso",
    parameters: dict[str, Any] | None = None,
    protocol: str = "moderate",
    applied: dict[str, int] | None = None,
    npoints: int = 80,
    dos_sigma: float = 0.1,
    dos_step: float = 0.01,
) -> dict[str, Any]:
    """SCF, then bands along the cell's high-symmetry path; band gap and DOS.

    Parameters
    ----------
    npoints
        k-points along the whole path.
    dos_sigma, dos_step
        Gaussian width and energy step of the DOS, eV.

    Returns
    -------
    dict
        ``band_gap`` (eV; 0 for a metal), ``band_gap_direct``, ``vbm``/``cbm`` (eV),
        ``fermi_level`` (eV), ``band_eigenvalues`` (n_spins, n_kpoints, n_bands) eV along the
        path with ``band_kpoints`` (fractional) and ``special_points``, ``dos_energies`` (eV)
        and ``dos`` (states/eV per cell and spin), and the SCF's energy, forces and stress.
    """
    scf = run_program(atoms, code, "static", parameters, protocol=protocol, applied=applied,
                      directory="scf")
    band_parameters = {**(parameters or {}), "parent_directory": str(Path("scf").absolute()),
                       "kpoints": code_info(code).inputs.band_path(npoints)}
    bands = run_program(atoms, code, "bands", band_parameters, protocol=protocol,
                        applied=applied, directory="bands")
    fermi = float(scf["fermi_level"])
    path_eig = np.asarray(bands["eigenvalues"], dtype=float)
    mesh_eig = np.asarray(scf["eigenvalues"], dtype=float)
    n_bands = min(path_eig.shape[2], mesh_eig.shape[2])
    combined = np.concatenate([path_eig[:, :, :n_bands], mesh_eig[:, :, :n_bands]], axis=1)
    gap = band_gap(combined, fermi_level=fermi)
    energies = np.arange(mesh_eig.min() - 1.0, mesh_eig.max() + 1.0, dos_step)
    dos = smeared_dos(mesh_eig, energies, weights=scf.get("kweights"), sigma=dos_sigma)
    special = bands["method"]["parameters"].get("kpoints", {}).get("special_points", {})
    return {
        **{k: scf[k] for k in ("structure", "energy", "forces", "stress", "method") if k in scf},
        "band_gap": 0.0 if gap.is_metal else gap.gap,
        "band_gap_direct": bool(gap.is_direct),
        "is_metal": bool(gap.is_metal),
        "vbm": gap.vbm,
        "cbm": gap.cbm,
        "fermi_level": fermi,
        "band_eigenvalues": path_eig,
        "band_kpoints": np.asarray(bands.get("kpoints")) if bands.get("kpoints") is not None
        else None,
        "special_points": special,
        "dos_energies": energies,
        "dos": dos,
        "data": {
            "kind": "bands",
            "kpoints": np.asarray(bands["kpoints"]) if bands.get("kpoints") is not None
            else np.zeros((path_eig.shape[-2], 3)),
            "eigenvalues_eV": path_eig.reshape((-1, *path_eig.shape[-2:])),
            "mesh_eigenvalues_eV": mesh_eig.reshape((-1, *mesh_eig.shape[-2:])),
            "special_points": {str(k): [float(x) for x in v] for k, v in special.items()},
            "fermi_level_eV": fermi,
            "band_gap_eV": 0.0 if gap.is_metal else float(gap.gap),
            "dos_energies_eV": energies,
            "dos_states_per_eV": dos,
        },
        "raw_output": scf.get("raw_output"),
        "bands_raw_output": bands.get("raw_output"),
        "warnings": [*scf.get("warnings", []), *bands.get("warnings", [])],
    }


class BandsMaker(CodeMaker):
    """Band structure, band gap and DOS of each structure."""

    name: ClassVar[str] = "bands"
    description: ClassVar[str] = "SCF + bands along the high-symmetry path; band gap and DOS"
    summary: ClassVar[tuple[str, ...]] = ("band_gap", "band_gap_direct", "fermi_level")

    code: str = "espresso"
    npoints: int = Field(80, ge=10, le=2000, description="k-points along the path")
    dos_sigma: float = Field(0.1, gt=0, description="Gaussian width of the DOS, eV")

    def make(self, atoms: Atoms, start: Any = None) -> Flow:
        step = band_structure(atoms=atoms if start is None else start, npoints=self.npoints,
                              dos_sigma=self.dos_sigma, **self.code_settings())
        return Flow([step], name=f"bands {atoms.get_chemical_formula()}")
