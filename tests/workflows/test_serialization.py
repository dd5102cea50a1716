import math

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.constraints import FixAtoms
from pymatgen.core import Lattice, Structure

from matdx.workflows.serialization import (
    SerializationError,
    canonical_json,
    decode,
    encode,
    sha256_json,
)


def test_numpy_arrays_round_trip_exactly():
    values = {
        "floats": np.random.default_rng(1).normal(size=(3, 4)),
        "ints": np.arange(6, dtype=np.int32).reshape(2, 3),
        "complex": np.array([1 + 2j, -0.5j]),
        "bools": np.array([True, False]),
    }
    back = decode(encode(values))
    for key, array in values.items():
        assert back[key].dtype == array.dtype
        np.testing.assert_array_equal(back[key], array)


def test_non_finite_floats_become_strict_json():
    encoded = encode({"nan": float("nan"), "arr": np.array([np.inf, 1.0])})
    text = canonical_json(encoded)  # allow_nan=False: would raise on a bare NaN
    back = decode(encoded)
    assert "NaN" not in text
    assert math.isnan(back["nan"])
    assert back["arr"][0] == np.inf


def test_atoms_round_trip_with_constraints_magmoms_and_info():
    atoms = bulk("Fe", cubic=True).repeat(2)
    atoms.set_initial_magnetic_moments([2.2] * len(atoms))
    atoms.set_tags(range(len(atoms)))
    atoms.set_constraint(FixAtoms(indices=[0, 3]))
    atoms.info["label"] = "bcc Fe"
    back = decode(encode(atoms))
    np.testing.assert_array_equal(back.positions, atoms.positions)
    np.testing.assert_array_equal(back.cell.array, atoms.cell.array)
    np.testing.assert_array_equal(back.get_initial_magnetic_moments(), [2.2] * len(atoms))
    np.testing.assert_array_equal(back.get_tags(), range(len(atoms)))
    assert back.constraints[0].index.tolist() == [0, 3]
    assert back.info == {"label": "bcc Fe"}


def test_molecule_without_cell():
    water = molecule("H2O")
    back = decode(encode(water))
    assert back.get_chemical_formula() == "H2O"
    assert not back.pbc.any()


def test_pymatgen_structure_round_trip():
    structure = Structure(Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    back = decode(encode({"s": structure}))["s"]
    assert isinstance(back, Structure)
    assert back == structure


def test_hash_is_stable_and_order_independent():
    a = encode({"x": 1.0, "y": [1, 2], "z": np.ones(2)})
    b = encode({"z": np.ones(2), "y": [1, 2], "x": 1.0})
    assert sha256_json(a) == sha256_json(b)
    assert sha256_json(a) != sha256_json(encode({"x": 1.0000000001, "y": [1, 2], "z": np.ones(2)}))


def test_unsupported_value_names_its_path():
    with pytest.raises(SerializationError, match=r"\$\.kwargs\.calc: cannot serialise"):
        encode({"kwargs": {"calc": object()}})
    with pytest.raises(SerializationError, match="dict keys must be strings"):
        encode({1: "x"})
