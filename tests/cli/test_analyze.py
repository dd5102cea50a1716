"""`matdx analyze`: kernels mapped over a campaign's trajectories on a local Dask cluster."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from matdx.store.models import Job, ProvenanceEdge, Record
from tests.conftest import cli_user, matdx_cli


def home_is_sqlite() -> bool:
    import os

    return not os.environ.get("MATDX_STORE")

MD = """\
name: three-md
executor: {type: local, workers: 2}
recipe: md
structures: [{bulk: [Cu], cubic: true, repeat: [2, 2, 2]}]
settings: {steps: 100, sample_every: 5, timestep_fs: 2}
sweep: {temperature_K: [300, 600, 900]}
"""


def test_analyze_writes_linked_records_once(home, tmp_path, monkeypatch):
    ada = cli_user(monkeypatch, "ada")
    campaign = tmp_path / "md.yaml"
    campaign.write_text(MD.replace("recipe: md", "recipe: md\nexport_control: true"))
    assert matdx_cli("submit", str(campaign)).returncode == 0
    assert matdx_cli("run", "three-md").returncode == 0

    first = matdx_cli("analyze", "three-md", "--kernel", "rdf,msd,vacf", "--workers", "2",
                      timeout=600)
    assert first.returncode == 0, first.stderr + first.stdout
    assert "3 trajectories in three-md; 0 already analysed" in first.stdout

    from matdx.store.store import Store

    store = Store(Path(home))
    with store.transaction() as session:
        analyses = session.execute(
            select(Record.record_id, Record.document).join(Job, Job.id == Record.job_id)
            .where(Job.name == "analyze", Record.status == "completed",
                   Job.campaign_id.in_(select(Job.campaign_id).where(Job.name == "analyze")))
        ).all()
        md_records = set(session.scalars(
            select(Record.record_id).join(Job, Job.id == Record.job_id)
            .where(Job.name == "md")))
        governance = {(d["governance"]["owner"], d["governance"]["export_control"])
                      for _, d in analyses}
        derived = [(record_id, doc) for record_id, doc in analyses
                   if "vacf" in doc["method"]["parameters"]["kernels"]]
        edges = {e.child_id: e.parent_id for e in session.scalars(
            select(ProvenanceEdge).where(ProvenanceEdge.child_id.in_(
                [r for r, _ in derived])))}
    assert len(derived) == 3
    assert governance == {(ada, True)}  # the trajectories' owner and export control carry over
    assert set(edges.values()) == md_records  # each analysis is linked to its trajectory
    second = matdx_cli("analyze", "three-md", "--kernel", "rdf,msd,vacf", timeout=600)
    assert second.returncode == 0
    assert "3 already analysed" in second.stdout and "nothing new to compute" in second.stdout
    bad = matdx_cli("analyze", "three-md", "--kernel", "rdf,voronoi")
    assert bad.returncode == 2 and "voronoi" in bad.stderr
    monkeypatch.setenv("MATDX_USER", "bob")  # ada's campaign is private
    hidden = matdx_cli("analyze", "three-md", "--kernel", "rdf")
    said = hidden.stderr + hidden.stdout
    if home_is_sqlite():  # no one else on SQLite: the name cannot even be claimed
        assert hidden.returncode == 2 and "cannot claim another identity" in said
    else:
        assert hidden.returncode != 0 and "not visible to bob" in said
