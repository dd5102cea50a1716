"""Stated errors cover the systematic part (issue 14): fit range for B0, strain for Cij.

Reference: Mishin et al., Phys. Rev. B 63, 224106 (2001), the potential's own elastic constants
C11/C12/C44 = 169.9/122.6/76.2 GPa and B0 = 138.4 GPa (small strains); the potential file is
``Cu_mishin1.eam.alloy`` of Debian's ``lammps-data``. Published values carry one decimal, so
agreement with them is judged within the stated error plus half of that last digit (0.05 GPa).
That the stated error is honest is checked without any allowance: the default strain's
constants must agree, within their stated error, with those of a run at half the strain.
Without the allowance C44 fails: 76.2042 ± 0.0024 against 76.2, and the file's zero-strain
limit is 76.2058 (recipes/elastic.py docstring); the file's equilibrium lattice constant,
3.614927 Å against the analytic potential's 3.615 Å, shows that it is not exactly Mishin's
functions, a difference worth 0.01 GPa in C44 and below the published precision.
"""

from __future__ import annotations

import numpy as np
import pytest

from matdx.recipes.elastic import fit_elastic
from matdx.recipes.eos import birch_murnaghan, bulk_modulus_estimate
from matdx.workflows.campaign import plan_campaign, read_campaign
from matdx.workflows.serialization import decode

ROUNDING_GPA = 0.05
MISHIN = {"pair_style": "eam/alloy", "pair_coeff": ["* * Cu_mishin1.eam.alloy Cu"]}


def test_range_drift_widens_the_error_and_is_extrapolated_away():
    """E(V) with a B0 that drifts linearly with the range: the estimate recovers B0."""
    v0, b0 = 12.0, 0.9  # Å³, eV/Å³
    volumes = v0 * np.linspace(0.96, 1.04, 11)
    exact = birch_murnaghan(volumes, -3.0, v0, b0, 5.0)
    distorted = exact + 0.02 * np.abs(volumes / v0 - 1) ** 3  # not Birch–Murnaghan: |x|³
    found = bulk_modulus_estimate(volumes, distorted)
    assert found["B0_GPa_full_range"] != pytest.approx(found["B0_GPa_half_range"], rel=1e-6)
    assert abs(found["B0_GPa"] - b0 * 160.21766208) <= found["B0_GPa_err"]
    clean = bulk_modulus_estimate(volumes, exact)
    assert clean["B0_GPa_err"] < 1e-3 * clean["B0_GPa"]
    few = bulk_modulus_estimate(volumes[::2], exact[::2])  # 6 points: 3 within ±2 %
    assert few["B0_GPa_half_range"] is None and "too few" in few["warnings"][0]


def test_elastic_fit_extrapolates_to_zero_strain_with_the_drift_as_error():
    """Stresses σ = C e + k e|e| (a strain-dependent slope) on a cubic C."""
    c = np.zeros((6, 6))
    c[:3, :3] = 120.0
    c[[0, 1, 2], [0, 1, 2]] = 170.0
    c[[3, 4, 5], [3, 4, 5]] = 76.0
    gpa = 1 / 160.21766208
    points = []
    for j in range(6):
        for e in (-0.002, -0.001, 0.001, 0.002):
            voigt = (c[:, j] * e + 30.0 * e * abs(e)) * gpa
            full = np.array([[voigt[0], voigt[5], voigt[4]], [voigt[5], voigt[1], voigt[3]],
                             [voigt[4], voigt[3], voigt[2]]])
            points.append({"component": j, "strain": e, "stress": full})
    from ase.build import bulk

    fitted = fit_elastic.original(points, bulk("Cu"))
    assert np.allclose(fitted["C_GPa"], c, atol=1e-6)
    assert fitted["C11_GPa_err"] == pytest.approx(30.0 * 0.001, rel=1e-3)
    assert fitted["C_GPa_small_strain"][0, 0] == pytest.approx(170.0 + 30.0 * 0.001)
    assert fitted["stresses_GPa"].shape == (24, 6) and fitted["strains"].shape == (24,)


@pytest.mark.programs
def test_mishin_copper_b0_and_cij_at_default_settings_cover_the_published_values(tmp_path):
    from matdx.client import Client
    from matdx.workflows.executors.local import LocalExecutor

    home = tmp_path / "home"
    client = Client(home, executors={"local": LocalExecutor(workers=2)})
    half_strain = {"recipe": "elastic", "code": "lammps", "parameters": MISHIN,
                   "structures": [{"bulk": ["Cu"]}], "settings": {"strain": 0.0005}}
    campaign_id = client.submit(plan_campaign(read_campaign({
        "name": "cu-mishin", "studies": [
            *({"recipe": recipe, "code": "lammps", "parameters": MISHIN,
               "structures": [{"bulk": ["Cu"]}]} for recipe in ("eos", "elastic")),
            half_strain]})))
    [status] = client.run(campaign_id, poll_s=0.5, timeout_s=900)
    assert status.counts == {"COMPLETED": status.total}, status.failures
    outputs, smaller = {}, None
    for row in client.results(campaign_id):
        output = decode(row["output"])
        if row["recipe"] == "elastic" and output["strain_magnitudes"][0] < 0.00075:
            smaller = output
        else:
            outputs[row["recipe"]] = output
    client.store.dispose()

    eos = outputs["eos"]
    print(f"B0 = {eos['B0_GPa']:.3f} ± {eos['B0_GPa_err']:.3f} GPa (full range "
          f"{eos['B0_GPa_full_range']:.3f}, half range {eos['B0_GPa_half_range']:.3f})")
    assert eos["B0_GPa_err"] <= 0.01 * eos["B0_GPa"]
    assert abs(eos["B0_GPa"] - 138.4) <= eos["B0_GPa_err"] + ROUNDING_GPA

    elastic = outputs["elastic"]
    for name, published in (("C11", 169.9), ("C12", 122.6), ("C44", 76.2)):
        value, error = elastic[f"{name}_GPa"], elastic[f"{name}_GPa_err"]
        again = smaller[f"{name}_GPa"]
        print(f"{name} = {value:.4f} ± {error:.4f} GPa (published {published}; at half the "
              f"strain {again:.4f} ± {smaller[f'{name}_GPa_err']:.4f})")
        assert error <= 0.01 * value, name
        assert abs(value - again) <= error, name  # the stated error covers the strain choice
        assert abs(value - published) <= error + ROUNDING_GPA, name
