"""Phonon supercells sample the unit cell's k-points (issue 14, Si Γ optical mode).

The cause of the Γ discrepancy that issue 14 reports (supercell 14.45 THz against a 2-atom
frozen phonon at 14.60) was not the k-point mesh but the protocol's Marzari–Vanderbilt smearing
(0.01 Ry) on a semiconductor. It puts the Fermi level 0.09 eV above Si's valence-band top,
which is then partly empty (occupations 0.88–1.08 at Γ); a displacement splits those states,
and their occupations respond nonlinearly once the splitting approaches the smearing width.
Displacing a whole sublattice (the 2-atom frozen phonon) splits them by 0.1 eV, one atom of a
2×2×2 supercell by 0.01 eV, so the two disagree (pw.x, 6³ and 3³ Γ-centred grids, same FFT
grid per cell: 14.914 against 14.758 THz). With fixed occupations, as a semiconductor needs,
both give the same frequency (15.45 THz on the 6³ grid; measured 15.5). The protocols now
choose them: the relaxation runs with the protocol's smearing, finds Si's gap, and the force
calculations after it use fixed occupations (:meth:`EspressoInputs.for_band_gap`).
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from matdx.recipes.phonon import supercell_kpoints
from matdx.workflows.campaign import plan_campaign, read_campaign

DIAGONAL_2 = [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
IDENTITY = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_supercell_grid_is_the_unit_cell_grid_divided_by_the_multiples():
    si = bulk("Si")
    for density in (3.0, 5.0, 8.0):
        unit = supercell_kpoints("espresso", "fast", {"kpoints": {"density": density}}, si,
                                 IDENTITY)["kpoints"]["grid"]
        found = supercell_kpoints("espresso", "fast", {"kpoints": {"density": density}}, si,
                                  DIAGONAL_2)["kpoints"]
        assert found["grid"] == [-(-n // 2) for n in unit]
        assert found["shift"] == [0, 0, 0]
    explicit = {"kpoints": {"grid": [4, 4, 4], "shift": [0, 0, 0]}}
    assert supercell_kpoints("espresso", "fast", explicit, si,
                             DIAGONAL_2)["kpoints"]["grid"] == [2, 2, 2]
    assert "kpoints" not in supercell_kpoints("emt", "moderate", {}, bulk("Cu"), DIAGONAL_2)


@pytest.mark.slow
@pytest.mark.programs
def test_si_gamma_optical_mode_of_the_supercell_equals_the_frozen_phonon(tmp_path):
    """pw.x, protocol fast, occupations left to the protocol: the relaxation (smeared) finds
    the gap, the force calculations use fixed occupations, and the 2×2×2 supercell (2³ grid)
    and the 2-atom cell (frozen phonon, the 4³ grid the supercell's stands for) agree on the
    Γ optical frequency within 0.3 %; the supercell's phonons are those of stable Si."""
    from matdx.client import Client
    from matdx.workflows.executors.local import LocalExecutor
    from matdx.workflows.serialization import decode

    client = Client(tmp_path / "home", executors={"local": LocalExecutor(workers=2)})
    grid = {"kpoints": {"grid": [4, 4, 4], "shift": [0, 0, 0]}}
    campaign_id = client.submit(plan_campaign(read_campaign({"name": "si-gamma", "studies": [
        {"recipe": "phonon", "code": "espresso", "protocol": "fast",
         "structures": [{"bulk": ["Si"]}], "parameters": grid,
         "settings": {"supercell": supercell, "mesh": [8, 8, 8]}}
        for supercell in (DIAGONAL_2, IDENTITY)]})))
    [status] = client.run(campaign_id, poll_s=1.0, timeout_s=1800)
    assert status.counts == {"COMPLETED": status.total}, status.failures
    gamma, grids, outputs, occupations = {}, {}, {}, {}
    for row in client.results(campaign_id):
        stored = client.record(row["record_id"])
        size = round(float(np.linalg.det(np.asarray(stored.phonon.supercell_matrix))))
        model = stored.phonopy()
        model.run_qpoints([[0, 0, 0]])
        gamma[size] = float(np.max(model.qpoints.frequencies[0]))
        grids[size] = stored.method.kpoints["grid"]
        occupations[size] = (dict(stored.method.smearing),
                             stored.method.parameters["input_parameters"]["system"]
                             ["occupations"])
        outputs[size] = decode(row["output"])
    client.store.dispose()
    big, small = gamma[8], gamma[1]
    print(f"Γ optical: supercell {big:.4f} THz (grid {grids[8]}), 2-atom {small:.4f} THz "
          f"(grid {grids[1]}), difference {100 * (big - small) / small:+.3f} %")
    assert grids[8] == [2, 2, 2] and grids[1] == [4, 4, 4]
    assert occupations == {8: ({}, "fixed"), 1: ({}, "fixed")}
    assert big == pytest.approx(small, rel=0.003)
    phonon = outputs[8]
    assert phonon["min_frequency_THz"] > -0.1
    assert phonon["dynamically_stable"]
    assert 13.0 < phonon["max_frequency_THz"] < 17.0  # Si optical modes: 15.5 THz measured
