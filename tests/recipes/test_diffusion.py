"""Diffusion in the demo's Cu runs (EMT): none in the crystal, the reference value in the liquid.

The reference is ``benchmarks/diffusion_reference.json``, written by
``benchmarks/diffusion_reference.py`` (a longer seeded run; its command is in the file). The test
runs the same function at the demo's length with another seed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from diffusion_reference import run  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [300.0, 1000.0])
def test_a_solid_reports_no_diffusion(tmp_path, monkeypatch, temperature):
    monkeypatch.chdir(tmp_path)
    result = run(temperature, steps=600, seed=1)
    assert result["diffusion_detected"] is False
    assert result["D_cm2_per_s"] is None  # never a positive (or negative) D for a crystal
    assert 0 < result["D_upper_cm2_per_s"] < 1e-6
    assert result["diffusion"].startswith("no diffusion detected, D < ")
