"""Custodian's VASP validators as after-the-run checks, on a real finished VASP run
(``fixtures/vasp/postprocess``, see ``fixtures/vasp/README.md`` for its source): the whole run
passes them; the same run with a torn ``vasprun.xml`` or a missing ``OSZICAR`` does not."""

from __future__ import annotations

from matdx.codes.diagnosis import diagnose_run
from matdx.codes.vasp import VaspTemplate
from tests.codes.helpers import copy_fixture, handlers_firing

VALIDATORS = {"custodian.VaspFilesValidator", "custodian.VasprunXMLValidator",
              "custodian.VaspNpTMDValidator", "custodian.VaspAECCARValidator"}


def test_every_finished_run_check_is_flagged():
    flagged = {h.name for h in VaspTemplate().handlers if h.checks_finished_runs}
    assert flagged == VALIDATORS | {
        "custodian.IncorrectSmearingHandler", "custodian.KspacingMetalHandler",
        "custodian.LargeSigmaHandler", "max_force"}


def test_a_whole_finished_run_passes_the_validators(tmp_path):
    directory = copy_fixture("vasp/postprocess", tmp_path)
    assert not handlers_firing(VaspTemplate(), directory) & VALIDATORS


def test_a_torn_vasprun_xml_is_refused_as_infrastructure(tmp_path):
    directory = copy_fixture("vasp/postprocess", tmp_path)
    xml = directory / "vasprun.xml"
    xml.write_bytes(xml.read_bytes()[: xml.stat().st_size // 2])
    assert handlers_firing(VaspTemplate(), directory) & VALIDATORS == {
        "custodian.VasprunXMLValidator"}
    report = diagnose_run(VaspTemplate(), directory)
    [error] = [e for e in report["errors"] if e["name"] == "custodian.VasprunXMLValidator"]
    assert error["kind"] == "infrastructure" and "not accepted" in error["message"]


def test_a_missing_oszicar_is_refused(tmp_path):
    directory = copy_fixture("vasp/postprocess", tmp_path)
    (directory / "OSZICAR").unlink()
    assert "custodian.VaspFilesValidator" in handlers_firing(VaspTemplate(), directory)


def test_validators_leave_unfinished_runs_to_the_handlers(tmp_path):
    directory = copy_fixture("vasp/postprocess", tmp_path)
    outcar = directory / "OUTCAR"
    text = outcar.read_text()
    outcar.write_text(text[: text.index("General timing and accounting")])
    (directory / "OSZICAR").unlink()
    assert not handlers_firing(VaspTemplate(), directory) & VALIDATORS
