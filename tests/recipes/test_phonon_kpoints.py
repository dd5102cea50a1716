"""Phonon supercells sample the unit cell's k-points (issue 14, Si Γ optical mode)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from matdx.recipes.phonon import supercell_kpoints
from matdx.workflows.campaign import plan_campaign, read_campaign

DIAGONAL_2 = [[2, 0, 0], [0, 2, 0], [0, 0, 2]]


def test_supercell_grid_is_the_unit_cell_grid_divided_by_the_multiples():
    si = bulk("Si")
    for density in (3.0, 5.0, 8.0):
        unit = supercell_kpoints("espresso", "fast", {"kpoints": {"density": density}}, si,
                                 [[1, 0, 0], [0, 1, 0], [0, 0, 1]])["kpoints"]["grid"]
        found = supercell_kpoints("espresso", "fast", {"kpoints": {"density": density}}, si,
                                  DIAGONAL_2)["kpoints"]
        assert found["grid"] == [-(-n // 2) for n in unit]
        assert found["shift"] == [0, 0, 0]
    assert "kpoints" not in supercell_kpoints("emt", "moderate", {}, bulk("Cu"), DIAGONAL_2)


@pytest.mark.slow
@pytest.mark.programs
@pytest.mark.xfail(
    strict=True,
    reason="issue 14: the Γ optical mode of the 2×2×2 supercell still differs from the frozen "
    "phonon by more than 0.3 % with commensurate grids; the cause is not found yet",
)
def test_si_gamma_optical_mode_of_the_supercell_equals_the_frozen_phonon(tmp_path):
    """pw.x, protocol fast: the 2×2×2 supercell and the 2-atom cell (frozen phonon, with the
    unit-cell grid the supercell's grid stands for) agree on the Γ optical frequency."""
    from matdx.client import Client
    from matdx.workflows.executors.local import LocalExecutor

    client = Client(tmp_path / "home", executors={"local": LocalExecutor(workers=2)})

    def gamma(name: str, supercell: list, parameters: dict) -> tuple[float, dict]:
        campaign_id = client.submit(plan_campaign(read_campaign({
            "name": name, "recipe": "phonon", "code": "espresso", "protocol": "fast",
            "structures": [{"bulk": ["Si"]}], "parameters": parameters,
            "settings": {"supercell": supercell, "relax_first": False, "mesh": [4, 4, 4]}})))
        [status] = client.run(campaign_id, poll_s=1.0, timeout_s=1800)
        assert status.counts == {"COMPLETED": status.total}, status.failures
        [row] = client.results(campaign_id)
        stored = client.record(row["record_id"])
        model = stored.phonopy()
        model.run_qpoints([[0, 0, 0]])
        return float(np.max(model.qpoints.frequencies[0])), stored.method.kpoints

    big, kpoints = gamma("si-supercell", DIAGONAL_2, {})
    unit_grid = [2 * n for n in kpoints["grid"]]
    small, _ = gamma("si-frozen", [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                     {"kpoints": {"grid": unit_grid, "shift": [0, 0, 0]}})
    client.store.dispose()
    print(f"Γ optical: supercell {big:.4f} THz (grid {kpoints['grid']}), 2-atom {small:.4f} "
          f"THz (grid {unit_grid}), difference {100 * (big - small) / small:+.3f} %")
    assert big == pytest.approx(small, rel=0.003)
