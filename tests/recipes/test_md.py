"""The MD recipe and its analysis job (the kernels themselves are tested in tests/kernels)."""

import numpy as np
import pytest
from ase.build import bulk

from matdx.codes.trajectory import TrajectoryReader, TrajectoryWriter
from matdx.recipes.analysis import analyze
from matdx.recipes.md import md
from matdx.recipes.relax import relax
from matdx.workflows import ArtifactFile


def test_analysis_of_a_random_walk_recovers_its_diffusion_coefficient(tmp_path):
    """Atoms on a perfect fcc lattice plus independent random walks: g(r) keeps its fcc peak
    at early times and the MSD gives back D = sigma² / (2 dt) per axis."""
    rng = np.random.default_rng(11)
    atoms = bulk("Cu", a=3.6, cubic=True).repeat(5)
    sigma, dt, n = 0.02, 10.0, 200
    steps = rng.normal(scale=sigma, size=(n, len(atoms), 3))
    steps[0] = 0
    positions = atoms.positions[None] + np.cumsum(steps, axis=0)
    path = tmp_path / "walk.h5"
    with TrajectoryWriter(path, atoms.numbers, atoms.pbc) as writer:
        for i, frame in enumerate(positions):
            writer.append(frame, atoms.cell.array, time=i * dt, step=i)
    result = analyze.original(ArtifactFile(str(path)), 300.0, equilibration_fraction=0.0)
    expected = sigma**2 / (2 * dt)  # Å²/fs
    assert result["D_A2_per_fs"] == pytest.approx(expected, rel=0.1)
    assert abs(result["D_A2_per_fs"] - expected) < 4 * result["D_cm2_per_s_err"] / 0.1
    assert result["time_fs"][1] == dt
    assert result["msd_A2"][0] == pytest.approx(0, abs=1e-12)


def test_fcc_first_shell_from_the_analysis(tmp_path):
    atoms = bulk("Cu", a=3.6, cubic=True).repeat(4)
    path = tmp_path / "fcc.h5"
    with TrajectoryWriter(path, atoms.numbers, atoms.pbc) as writer:
        for i in range(3):
            writer.append(atoms.positions, atoms.cell.array, time=i * 5.0, step=i)
    result = analyze.original(ArtifactFile(str(path)), 0.0, equilibration_fraction=0.0,
                              r_max=3.0, bins=300)
    assert result["first_peak_A"] == pytest.approx(3.6 / np.sqrt(2), abs=0.01)
    assert result["coordination_first_shell"] == pytest.approx(12, abs=1e-9)


def test_md_writes_a_trajectory_and_analysis_reads_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    atoms = bulk("Cu", cubic=True).repeat(2)
    out = md.original(atoms=atoms, temperature_K=500, timestep_fs=2, steps=100, sample_every=10)
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
    assert len(result["time_fs"]) == 11


def test_relax_records_its_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    atoms = bulk("Cu", a=3.75)
    out = relax.original(atoms=atoms, fmax=0.001)
    assert out["converged"]
    assert out["structure"].get_volume() < atoms.get_volume()
    assert np.abs(out["stress"]).max() < 1e-3  # eV/Å³
    with TrajectoryReader("relax.h5") as reader:
        assert reader.n_frames == out["n_steps"] + 1


def test_every_kernel_runs_on_an_md_trajectory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = md.original(atoms=bulk("Cu", cubic=True).repeat(3), temperature_K=300, timestep_fs=2,
                      steps=200, sample_every=2)
    result = analyze.original(out["trajectory"], 300, r_max=5.0,
                              kernels=["rdf", "msd", "vacf", "sq", "angles"])
    assert result["vacf"][0] == pytest.approx(1.0)
    peak = result["vdos_frequency_THz"][np.argmax(result["vdos"])]
    assert 2.0 < peak < 10.0  # Cu phonons lie below about 8 THz
    assert np.nanmax(result["s_q"]) > 5  # Bragg peaks (bins without allowed q are NaN)
    strongest = result["angle_deg"][np.argmax(result["angle_density"])]
    assert strongest == pytest.approx(60, abs=6)  # fcc first-shell angles: 60, 90, 120, 180
    with pytest.raises(ValueError, match="kernels: unknown"):
        analyze.original(out["trajectory"], 300, kernels=["voronoi"])
