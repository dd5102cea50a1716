import numpy as np
import pytest
from ase.build import bulk

from matdx.codes.trajectory import TrajectoryReader
from matdx.recipes.md import (
    analyze,
    diffusion_coefficient,
    md,
    mean_squared_displacement,
    radial_distribution,
)
from matdx.recipes.relax import relax
from matdx.workflows import ArtifactFile


def brute_force_msd(positions):
    n = len(positions)
    return np.array(
        [np.mean(np.sum((positions[k:] - positions[: n - k]) ** 2, axis=2)) for k in range(n)]
    )


def test_msd_matches_the_direct_average_over_origins():
    walk = np.cumsum(np.random.default_rng(3).normal(size=(150, 20, 3)), axis=0)
    np.testing.assert_allclose(mean_squared_displacement(walk), brute_force_msd(walk), atol=1e-8)


def test_random_walk_diffusion_coefficient():
    # steps of variance sigma² per axis every dt: D = sigma² / (2 dt)
    sigma, dt = 0.1, 2.0
    walk = np.cumsum(np.random.default_rng(5).normal(scale=sigma, size=(400, 500, 3)), axis=0)
    times = np.arange(400) * dt
    d, err = diffusion_coefficient(times, mean_squared_displacement(walk))
    assert d == pytest.approx(sigma**2 / (2 * dt), rel=0.05)
    assert err < 0.05 * d


def test_rdf_of_fcc_has_twelve_neighbours_at_a_over_root_two():
    atoms = bulk("Cu", a=3.6, cubic=True).repeat(4)
    r, g = radial_distribution(atoms.positions[None], atoms.cell.array[None], 6.0, 300)
    density = len(atoms) / atoms.get_volume()
    dr = r[1] - r[0]
    shells = 4 / 3 * np.pi * ((r + dr / 2) ** 3 - (r - dr / 2) ** 3)
    neighbours = np.sum((g * density * shells)[r < 3.0])
    assert neighbours == pytest.approx(12, abs=1e-9)
    assert r[np.argmax(g)] == pytest.approx(3.6 / np.sqrt(2), abs=dr)
    with pytest.raises(ValueError, match="r_max"):
        radial_distribution(atoms.positions[None], atoms.cell.array[None], 8.0, 10)


def test_md_writes_a_trajectory_and_analysis_reads_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    atoms = bulk("Cu", cubic=True).repeat(2)
    out = md.original(atoms, temperature_K=500, timestep_fs=2, steps=100, sample_every=10)
    assert isinstance(out["trajectory"], ArtifactFile)
    with TrajectoryReader("md.h5") as reader:
        frames = reader.read()
    assert frames.positions.shape == (11, 32, 3)
    np.testing.assert_allclose(frames.times, np.arange(11) * 20.0)
    assert frames.velocities.shape == frames.forces.shape == (11, 32, 3)
    assert reader.numbers.tolist() == [29] * 32
    assert out["md"]["n_frames"] == 11
    result = analyze.original(out["trajectory"], 500, equilibration_fraction=0.0, r_max=3.5)
    assert result["first_peak_A"] == pytest.approx(2.55, abs=0.15)
    assert result["msd_A2"][0] == pytest.approx(0, abs=1e-12)
    assert len(result["time_fs"]) == 11


def test_relax_records_its_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    atoms = bulk("Cu", a=3.75)
    out = relax.original(atoms, fmax=0.001)
    assert out["converged"]
    assert out["structure"].get_volume() < atoms.get_volume()
    assert np.abs(out["stress"]).max() < 1e-3  # eV/Å³
    with TrajectoryReader("relax.h5") as reader:
        assert reader.n_frames == out["n_steps"] + 1
