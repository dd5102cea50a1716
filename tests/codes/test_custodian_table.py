"""matdx's VASP recovery against custodian called directly, on custodian's own test files.

The cases are custodian's ``tests/files`` (commit and licence in
``fixtures/custodian/SOURCE.md``). For every case a custodian handler acts on, matdx (which
runs the same handler on a scratch copy of the run directory) must reach the same errors and
the same actions, and its declarative correction must give the next attempt the INCAR, KPOINTS
and POSCAR custodian wrote. Run with ``-s`` to print the table.
"""

from __future__ import annotations

import gzip
import shutil
import warnings
from pathlib import Path

import pytest
from pymatgen.io.vasp.inputs import Incar, Kpoints, Poscar

from matdx.codes.cp2k import Cp2kTemplate, parse_cp2k_input
from matdx.codes.custodian_handlers import CustodianHandler
from matdx.codes.errors import NoCorrection
from matdx.codes.vasp import VaspTemplate
from tests.codes.helpers import FIXTURES

SOURCE = FIXTURES / "custodian"


def _vasp_out_cases() -> list[tuple[str, str]]:
    """(case, matdx handler name) for every recorded VASP stdout of custodian's tests."""
    names = sorted(p.name for p in SOURCE.glob("vasp*"))
    cases = [(n, "custodian.VaspErrorHandler") for n in names]
    cases.append(("vasp.ibzkpt", "custodian.MeshSymmetryErrorHandler"))
    return cases


CASES = [
    *_vasp_out_cases(),
    ("std_err.txt.kpoints_trans", "custodian.StdErrHandler"),
    ("std_err.txt.oom", "custodian.StdErrHandler"),
    ("positive_energy", "custodian.PositiveEnergyErrorHandler"),
    ("nonconv", "custodian.NonConvergingErrorHandler"),
    ("static_smearing", "custodian.IncorrectSmearingHandler"),
    ("scan_metal", "custodian.KspacingMetalHandler"),
]
CP2K_CASES = [
    ("cp2k/cp2k.out.cholesky", "custodian.AbortHandler"),
    ("cp2k/cp2k.out.unconverged", "custodian.UnconvergedScfErrorHandler"),
    ("cp2k/cp2k.out.imprecise", "custodian.NumericalPrecisionHandler"),
    ("cp2k/cp2k.out.precondstuck", "custodian.FrozenJobErrorHandler"),
    ("cp2k/cp2k.out.hybrid", "custodian.UnconvergedScfErrorHandler"),
    ("cp2k/cp2k.out.conv", "custodian.UnconvergedScfErrorHandler"),
]
TABLE: list[tuple[str, str, str, str]] = []


def _copy(src: Path, dst: Path) -> None:
    if src.suffix == ".gz":
        dst.write_bytes(gzip.decompress(src.read_bytes()))
    else:
        shutil.copy(src, dst)


def make_run_dir(case: str, directory: Path) -> Path:
    """A run directory as custodian's tests lay it out for ``case``."""
    directory.mkdir()
    if (SOURCE / case).is_dir():
        for path in (SOURCE / case).iterdir():
            _copy(path, directory / path.name)
        return directory
    for name in ("KPOINTS", "POSCAR", "CONTCAR", "OSZICAR"):
        shutil.copy(SOURCE / name, directory / name)
    suffix = case.split(".", 1)[1].removesuffix(".gz")
    incar = next(SOURCE.glob(f"INCAR.{suffix}*"), SOURCE / "INCAR")
    _copy(incar, directory / "INCAR")
    target = "std_err.txt" if case.startswith("std_err") else "vasp.out"
    _copy(SOURCE / case, directory / target)
    return directory


def make_cp2k_run_dir(case: str, directory: Path) -> Path:
    directory.mkdir()
    shutil.copy(SOURCE / "cp2k" / "cp2k.inp.orig", directory / "cp2k.inp")
    shutil.copy(SOURCE / case, directory / "cp2k.out")
    return directory


@pytest.mark.parametrize(("case", "name"), CP2K_CASES)
def test_cp2k_matdx_reaches_custodians_error_and_correction(case, name, tmp_path):
    handler = {h.name: h for h in Cp2kTemplate().default_handlers()}[name]
    theirs_dir = make_cp2k_run_dir(case, tmp_path / "custodian")
    ours_dir = make_cp2k_run_dir(case, tmp_path / "matdx")
    theirs = custodian_directly(handler, theirs_dir)
    if isinstance(theirs, dict) and name.endswith("FrozenJobErrorHandler"):
        assert theirs["errors"] == ["Frozen preconditioner"]  # what matdx acts on
    if theirs is None:
        assert not handler.detect(ours_dir)
        TABLE.append((case, name, "-", "custodian finds nothing; matdx neither"))
        return
    if isinstance(theirs, Exception) or not theirs.get("actions"):
        with pytest.raises(NoCorrection):
            handler.correct(ours_dir, {}, None)
        TABLE.append((case, name, "-", "no action (custodian: none or its own error)"))
        return
    ours = handler.correct(ours_dir, {}, None)
    assert list(ours.errors) == list(theirs["errors"])
    assert list(ours.actions) == list(theirs["actions"])
    # the input of the next attempt: the failed one with matdx's updates equals custodian's
    from matdx.codes.handlers import deep_merge

    rebuilt = deep_merge(parse_cp2k_input((ours_dir / "cp2k.inp").read_text()),
                         ours.parameter_updates["input"])
    assert rebuilt == parse_cp2k_input((theirs_dir / "cp2k.inp").read_text())
    TABLE.append((case, name, ",".join(ours.errors),
                  "; ".join(str(a["action"]) for a in ours.actions)))


def custodian_directly(handler: CustodianHandler, directory: Path):
    """custodian's own check() and correct(), in place, as custodian runs them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = handler.make()
        if not original.check(str(directory)):
            return None
        try:
            return original.correct(str(directory))
        except (OSError, ValueError, KeyError, IndexError, AttributeError) as err:
            return err


@pytest.mark.parametrize(("case", "name"), CASES)
def test_matdx_reaches_custodians_error_and_correction(case, name, tmp_path):
    handlers = {h.name: h for h in VaspTemplate().default_handlers()}
    handler = handlers[name]
    theirs_dir = make_run_dir(case, tmp_path / "custodian")
    ours_dir = make_run_dir(case, tmp_path / "matdx")
    before = {p.name: p.read_bytes() for p in ours_dir.iterdir()}
    theirs = custodian_directly(handler, theirs_dir)
    atoms = None
    if theirs is None:
        assert not handler.detect(ours_dir)
        TABLE.append((case, name, "-", "custodian finds nothing; matdx neither"))
        return
    assert handler.detect(ours_dir)
    if isinstance(theirs, Exception) or not theirs.get("actions"):
        with pytest.raises(NoCorrection):
            handler.correct(ours_dir, {}, atoms)
        errors = "" if isinstance(theirs, Exception) else ",".join(theirs["errors"])
        TABLE.append((case, name, errors, "no action (custodian: none or its own error)"))
        return
    ours = handler.correct(ours_dir, {}, atoms)
    # the run directory is never touched: custodian worked on a scratch copy
    assert {p.name: p.read_bytes() for p in ours_dir.iterdir()} == before
    assert list(ours.errors) == list(theirs["errors"])
    assert list(ours.actions) == list(theirs["actions"])
    # the declarative correction reproduces the inputs custodian rewrote
    incar_updates = ours.parameter_updates.get("incar", {})
    expected_incar = dict(Incar.from_file(theirs_dir / "INCAR"))
    rebuilt = {k: v for k, v in {**Incar.from_file(ours_dir / "INCAR"), **incar_updates}.items()
               if v is not None}
    assert rebuilt == expected_incar
    if "kpoints" in ours.parameter_updates:
        written = Kpoints.from_str(ours.parameter_updates["kpoints"]["file"])
        assert written.as_dict() == Kpoints.from_file(theirs_dir / "KPOINTS").as_dict()
    if ours.restart_structure is not None:
        structure = Poscar.from_file(theirs_dir / "POSCAR").structure
        assert ours.restart_structure.get_positions() == pytest.approx(structure.cart_coords)
    TABLE.append((case, name, ",".join(ours.errors),
                  "; ".join(f"{a.get('dict') or a.get('file')} {a['action']}"
                            for a in ours.actions)))


def test_print_the_table():
    """The table of the cases compared above in this session (printed with ``pytest -s``)."""
    width = max((len(row[0]) for row in TABLE), default=10)
    for case, name, errors, action in TABLE:
        print(f"{case:<{width}}  {name.removeprefix('custodian.'):<28} {errors:<18} {action}")
    assert {(case, name) for case, name, *_ in TABLE} <= {*CASES, *CP2K_CASES}
