"""The protocols choose the occupations from the band gap a recipe's relaxation found (issue
14): fixed for a semiconductor where Quantum ESPRESSO's protocols smear a metal's; the
user's choice and codes without occupations are left alone."""

from __future__ import annotations

from ase.build import bulk

from matdx.recipes.calculation import for_band_gap, program_parameters
from matdx.recipes.eos import EOSMaker
from matdx.recipes.phonon import PhononMaker
from matdx.workflows.reference import OutputReference
from matdx.workflows.serialization import decode


def test_quantum_espresso_fixes_the_occupations_of_a_semiconductor_only():
    si = bulk("Si")
    chosen = for_band_gap("espresso", {}, 0.71)
    assert chosen == {"system": {"occupations": "fixed"}}
    full, _, _ = program_parameters("espresso", "fast", chosen, si)
    assert full["system"]["occupations"] == "fixed"
    for gap in (None, 0.0, 0.05):  # unknown, a metal, a gap a strain may close
        kept, _, _ = program_parameters("espresso", "fast", for_band_gap("espresso", {}, gap),
                                        si)
        assert kept["system"]["occupations"] == "smearing"
    mine = {"system": {"occupations": "smearing", "degauss": 0.02}}
    assert for_band_gap("espresso", mine, 2.0) == mine
    assert for_band_gap("espresso", {"system": {"ecutwfc": 30}}, 1.0) == \
        {"system": {"ecutwfc": 30, "occupations": "fixed"}}


def test_codes_without_smeared_protocols_keep_their_parameters():
    assert for_band_gap("lammps", {"pair_style": "eam"}, 3.0) == {"pair_style": "eam"}
    assert for_band_gap("emt", None, 1.0) == {}


def test_the_jobs_after_a_relaxation_take_its_band_gap():
    relax, displacements = PhononMaker(code="espresso", protocol="fast").make(bulk("Si")).items
    gap = decode(displacements.inputs)["kwargs"]["band_gap"]
    assert isinstance(gap, OutputReference)
    assert (gap.job_id, gap.path) == (relax.id, ("band_gap",))
    eos = EOSMaker(code="espresso", protocol="fast").make(bulk("Si")).items
    points = [decode(j.inputs)["kwargs"] for j in eos if j.name == "eos_point"]
    assert len(points) == 11
    assert {(p["band_gap"].job_id, p["band_gap"].path) for p in points} == \
        {(eos[0].id, ("band_gap",))}
    [alone] = PhononMaker(code="espresso", relax_first=False).make(bulk("Si")).items
    assert "band_gap" not in decode(alone.inputs)["kwargs"]
    # codes that do not choose occupations by the gap: the jobs' inputs are unchanged
    emt = EOSMaker(code="emt").make(bulk("Cu")).items
    assert all("band_gap" not in decode(j.inputs)["kwargs"] for j in emt[1:])
