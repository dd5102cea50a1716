"""The error tree: setup errors before a run, CalculationFailed and subclasses after it."""

from __future__ import annotations

import pickle

import pytest

from matdx.codes.errors import (
    CalculationFailed,
    CodeError,
    InputError,
    ProgramNotFound,
    PseudopotentialNotFound,
    ReadError,
    SCFError,
    SetupError,
    UnsupportedCalculation,
)
from matdx.codes.handlers import Correction


def test_tree_splits_setup_errors_from_failures():
    assert issubclass(InputError, SetupError)
    assert issubclass(InputError, ValueError)
    assert issubclass(PseudopotentialNotFound, InputError)
    assert issubclass(UnsupportedCalculation, InputError)
    assert issubclass(ProgramNotFound, SetupError)
    assert issubclass(SCFError, CalculationFailed)
    assert issubclass(ReadError, CalculationFailed)
    assert not issubclass(CalculationFailed, SetupError)
    assert issubclass(SetupError, CodeError) and issubclass(CalculationFailed, CodeError)


def test_pseudopotential_not_found_names_element_and_directory():
    err = PseudopotentialNotFound("Zr", "/usr/share/espresso/pseudo", "no UPF file")
    assert err.element == "Zr"
    assert err.directory == "/usr/share/espresso/pseudo"
    assert "'Zr'" in str(err) and "/usr/share/espresso/pseudo" in str(err)


def test_unsupported_calculation_lists_accepted():
    err = UnsupportedCalculation("cp2k", "bands", {"static", "relax"})
    assert "'bands'" in str(err) and "['relax', 'static']" in str(err)


def test_calculation_failed_carries_the_diagnosis(tmp_path):
    correction = Correction("scf_unconverged", "halve mixing", {"electrons": {"mixing_beta": 0.35}})
    err = SCFError(tmp_path, "scf_unconverged: halve mixing", "numerical", correction, ("scf",))
    assert err.directory == tmp_path and err.kind == "numerical"
    assert err.correction is correction
    data = err.to_dict()
    assert data["error"] == "SCFError"
    assert data["correction"]["parameter_updates"] == {"electrons": {"mixing_beta": 0.35}}
    assert data["handlers"] == ["scf"]


def test_kind_is_validated(tmp_path):
    with pytest.raises(ValueError, match="kind='weather'"):
        CalculationFailed(tmp_path, "x", "weather")  # type: ignore[arg-type]


def test_read_error_defaults_to_infrastructure_and_keeps_path(tmp_path):
    err = ReadError(tmp_path, "pw.out is truncated", path=tmp_path / "pw.out")
    assert err.kind == "infrastructure"
    assert err.path == tmp_path / "pw.out"


@pytest.mark.parametrize(
    "err",
    [
        PseudopotentialNotFound("Zr", "/x", "y"),
        UnsupportedCalculation("vasp", "md", {"static"}),
        ProgramNotFound("pw.x", "apt-get install quantum-espresso"),
        SCFError("/run", "scf", "numerical", Correction("h", "d"), ("h",)),
        ReadError("/run", "truncated", "infrastructure", None, (), "/run/pw.out"),
    ],
)
def test_errors_survive_pickling(err):
    """Executors move exceptions between processes."""
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err)
    assert str(copy) == str(err)
    if isinstance(err, CalculationFailed):
        assert copy.kind == err.kind and copy.reason == err.reason
