"""CalculationResult serialisation, and the band gap parsers report (matdx.codes.bandgap)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk

from matdx.codes.bandgap import gap_value
from matdx.codes.results import CalculationResult, file_sha256
from matdx.codes.trajectory import Frames


def test_band_gap_of_an_insulator_from_the_fermi_level():
    eigenvalues = np.array([[[-5.0, 1.0, 3.0], [-4.0, 0.5, 2.0]]])  # (1 spin, 2 k, 3 bands)
    assert gap_value(eigenvalues, 1.0) == pytest.approx(1.0)


def test_band_gap_of_a_metal_is_zero():
    eigenvalues = np.array([[[-5.0, -0.5, 3.0], [-4.0, 0.5, 2.0]]])  # band 2 crosses 0
    assert gap_value(eigenvalues, 0.0) == 0.0


def test_band_gap_from_occupations_and_partial_occupation():
    eigenvalues = np.array([[[-1.0, 2.0]], [[-0.5, 2.5]]])  # 2 spins, 1 k, 2 bands
    assert gap_value(eigenvalues, None, np.array([[[1, 0]], [[1, 0]]])) == pytest.approx(2.5)
    assert gap_value(eigenvalues, None, np.array([[[1, 0.5]], [[1, 0]]])) == 0.0


def test_band_gap_unknown_without_empty_bands():
    eigenvalues = np.array([[[-5.0, -1.0]]])
    assert gap_value(eigenvalues, -1.0) is None
    assert gap_value(eigenvalues) is None


def test_band_gap_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="n_spins, n_kpoints, n_bands"):
        gap_value(np.zeros((3, 2)), 0.0)


def test_to_dict_is_json_and_round_trips():
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.set_initial_magnetic_moments([0.5, -0.5])
    frames = Frames(
        positions=np.zeros((2, 2, 3)),
        cells=np.stack([atoms.cell.array] * 2),
        times=np.array([0.0, 1.0]),
        steps=np.array([0, 1]),
        velocities=None,
        forces=np.ones((2, 2, 3)),
        observables={"potential_energy": np.array([-1.0, -2.0])},
    )
    result = CalculationResult(
        code="espresso",
        calculation="relax",
        structure=atoms,
        converged=True,
        energy=np.float64(-10.5),
        forces=np.zeros((2, 3)),
        stress=-np.eye(3) * 0.01,
        eigenvalues=np.zeros((1, 2, 4)),
        n_scf_steps=np.int64(7),
        pseudopotentials=[{"element": "Si", "name": "Si.UPF", "sha256": "ab"}],
        frames=frames,
    )
    data = result.to_dict()
    text = json.dumps(data)  # raises on numpy values
    assert data["stress"][0][0] == -0.01 and data["energy"] == -10.5
    assert data["structure"]["initial_magnetic_moments"] == [0.5, -0.5]
    back = CalculationResult.from_dict(json.loads(text))
    assert np.allclose(back.structure.positions, atoms.positions)
    assert np.allclose(back.stress, result.stress)
    assert back.frames is not None and np.allclose(back.frames.forces, 1.0)
    assert back.frames.observables["potential_energy"].tolist() == [-1.0, -2.0]


def test_file_sha256(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
