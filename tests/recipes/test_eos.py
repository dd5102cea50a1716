import numpy as np
import pytest
from ase.build import bulk
from ase.eos import EquationOfState
from ase.units import GPa

from matdx.recipes.eos import EOSMaker, birch_murnaghan, eos_point, fit, fit_birch_murnaghan
from matdx.workflows import Response


def test_fit_recovers_known_parameters():
    volumes = np.linspace(10.0, 13.0, 9)
    energies = birch_murnaghan(volumes, -3.5, 11.6, 0.85, 4.6)
    result = fit_birch_murnaghan(volumes, energies)
    assert result["V0"] == pytest.approx(11.6, rel=1e-8)
    assert result["B0"] == pytest.approx(0.85, rel=1e-7)
    assert result["B0_GPa"] == pytest.approx(0.85 / GPa, rel=1e-7)
    assert result["B0_prime"] == pytest.approx(4.6, rel=1e-6)
    assert result["rms_residual"] < 1e-10


def test_fit_agrees_with_ase_on_emt_copper(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copper = bulk("Cu")
    points = [eos_point.original(atoms=copper, volume_factor=f)
              for f in np.linspace(0.92, 1.08, 11)]
    ours = fit.original(points, copper, {"code": "emt"})
    v0, e0, b0 = EquationOfState(
        [p["volume"] for p in points], [p["energy"] for p in points], eos="birchmurnaghan"
    ).fit()
    assert ours["B0_GPa_full_range"] == pytest.approx(b0 / GPa, rel=1e-6)
    # the reported B0 is extrapolated to zero range; its error covers the range drift
    assert ours["B0_GPa_err"] >= abs(ours["B0_GPa_full_range"] - ours["B0_GPa_half_range"])
    assert ours["V0"] == pytest.approx(v0, rel=1e-8)
    assert ours["E0"] == pytest.approx(e0, abs=1e-8)
    assert ours["minimum_bracketed"]
    assert ours["structure"].get_volume() == pytest.approx(ours["V0"], rel=1e-10)


def test_fit_extends_the_range_when_the_minimum_is_outside(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    squeezed = bulk("Cu", a=3.3)  # far below the EMT minimum: energies fall towards larger V
    points = [eos_point.original(atoms=squeezed, volume_factor=f)
              for f in np.linspace(0.94, 1.06, 7)]
    response = fit.original(points, squeezed, {"code": "emt"}, step=0.02, extensions_left=2)
    assert isinstance(response, Response)
    assert response.output["extended"] == "high"
    new_jobs = list(response.replace.jobs)
    assert [j.name for j in new_jobs] == ["eos_point"] * 3 + ["fit"]
    factors = [j.inputs["kwargs"]["volume_factor"] for j in new_jobs[:3]]
    assert factors == pytest.approx([1.08, 1.10, 1.12])
    assert response.replace.output == new_jobs[-1].output.__matdx_json__()
    with pytest.raises(ValueError, match=r"not convex|at least 5"):
        fit_birch_murnaghan([1, 2, 3], [3, 2, 1])


def test_maker_validates_and_builds_the_flow():
    with pytest.raises(ValueError, match="points"):
        EOSMaker(points=3)
    flow = EOSMaker(points=9).make(bulk("Al"))
    names = [j.name for j in flow.jobs]
    assert names == ["relax"] + ["eos_point"] * 9 + ["fit"]
    *others, fit_job = list(flow.jobs)
    assert fit_job.parents == {j.id for j in others}  # the points, and the relaxed structure
