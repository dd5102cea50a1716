"""CHGNet (the ``mlip`` extra) through the same recipes as EMT: static, relax and MD."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from matdx.codes.trajectory import TrajectoryReader
from matdx.recipes.md import md
from matdx.recipes.relax import relax
from matdx.recipes.static import static


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_chgnet_static_relax_and_md():
    silicon = bulk("Si", a=5.6)  # stretched: the relaxation must shrink it
    point = static.original(atoms=silicon, code="chgnet")
    assert point["method"]["code"] == "chgnet"
    assert -11.5 < point["energy"] < -9.5  # two Si atoms, eV (PBE-like scale)
    assert np.trace(point["stress"]) > 0  # stretched: tension, positive in ASE's sign
    relaxed = relax.original(atoms=silicon, code="chgnet", fmax=0.02)
    assert relaxed["converged"]
    assert relaxed["structure"].get_volume() < silicon.get_volume()
    assert relaxed["energy"] < point["energy"]
    run = md.original(atoms=bulk("Si", cubic=True), code="chgnet", temperature_K=300,
                      timestep_fs=1.0, steps=20, sample_every=2)
    with TrajectoryReader("md.h5") as reader:
        assert reader.n_frames == 11
    assert run["md"]["n_frames"] == 11


def test_chgnet_code_is_validated_like_any_other():
    from matdx.recipes.codes import UnsupportedCode, check_code

    check_code("chgnet", "md", ["Si", "O"])
    with pytest.raises(UnsupportedCode, match="cannot run the 'bands' recipe"):
        check_code("chgnet", "bands", ["Si"])
