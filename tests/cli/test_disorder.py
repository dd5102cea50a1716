"""Disordered structures are refused at submit, for every reader and for Python objects
(issue 13, point 1): the message names the file, the site and the occupancies, and what to do.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ase.build import bulk

from tests.conftest import matdx_cli

DATA = Path(__file__).parents[1] / "workflows" / "data" / "disordered"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CuAu-50-50.cif", "site Cu1/Au1 (Cu 0.5, Au 0.5)"),
        ("Cu-vacancies.cif", "site Cu1 (Cu 0.92, vacant 0.08)"),
        ("CuAu-mixed.poscar", "atoms 0 and 4 share one position (Cu and Au: a mixed site)"),
        ("NiCu-occupancy.extxyz", "atom 1 (Cu 0.5)"),
    ],
)
def test_submit_refuses_a_disordered_file(tmp_path, name, expected):
    campaign = tmp_path / "campaign.yaml"
    campaign.write_text(f"name: alloy\nrecipe: static\nstructures:\n  - file: {DATA / name}\n")
    home = tmp_path / "home"
    done = matdx_cli("submit", str(campaign), env={"MATDX_HOME": str(home)})
    message = " ".join(done.stderr.split())
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"studies[0].structures[0].file: {name} is disordered" in message
    assert expected in message
    assert "order it first" in message
    assert not home.exists()  # nothing written


def test_ordered_cif_is_accepted(tmp_path):
    from matdx.workflows.campaign import plan_campaign, read_campaign

    graph = plan_campaign(read_campaign({"name": "ok", "recipe": "static",
                                         "structures": [{"file": "Cu.cif"}]}),
                          DATA.parent)
    assert len(graph.workflows) == 1


def test_python_objects_are_checked_too():
    from pymatgen.core import Lattice, Structure

    from matdx.workflows.campaign import CampaignError, plan_campaign, read_campaign

    alloy = Structure(Lattice.cubic(3.7), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    with pytest.raises(CampaignError, match=r"structures\[0\]: the pymatgen Structure is "
                                            r"disordered: site 0 \(Cu 0.5, Au 0.5\)"):
        plan_campaign(read_campaign({"name": "x", "recipe": "static", "structures": [alloy]}))
    atoms = bulk("Cu", cubic=True)
    atoms.info["occupancy"] = {"0": {"Cu": 0.75}}
    with pytest.raises(CampaignError, match=r"the ase.Atoms is disordered: site kind 0 "
                                            r"\(Cu 0.75, vacant 0.25\)"):
        plan_campaign(read_campaign({"name": "x", "recipe": "static", "structures": [atoms]}))
    ordered = Structure(Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]])
    graph = plan_campaign(read_campaign({"name": "x", "recipe": "static",
                                         "structures": [ordered, bulk("Cu")]}))
    assert len(graph.workflows) == 2


def test_jobs_built_in_python_are_checked_at_submit(tmp_path):
    from pymatgen.core import Lattice, Structure

    from matdx.store.store import Store
    from matdx.workflows import Flow
    from matdx.workflows.submit import CampaignGraph, SubmitError, submit
    from tests.workflows.jobs import add

    alloy = Structure(Lattice.cubic(3.7), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    graph = CampaignGraph(name="py", workflows=[("t", Flow([add(1, alloy)]))],
                          executor={"type": "local"}, spec={})
    store = Store(tmp_path / "home")
    try:
        with pytest.raises(SubmitError, match=r"job add \(inputs.args\[1\]\) is disordered: "
                                              r"site 0 \(Cu 0.5, Au 0.5\)"):
            submit(store, graph)
        from sqlalchemy import func, select

        from matdx.store.models import Campaign
        with store.transaction() as session:
            assert session.scalar(select(func.count()).select_from(Campaign)) == 0
    finally:
        store.dispose()
