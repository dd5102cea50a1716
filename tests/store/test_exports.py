"""Exports of a real campaign (EMT relaxations and MD): extended XYZ for potentials, OPTIMADE
JSON Lines, an ASE database and a Parquet table, each checked against the stored records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from matdx.codes.trajectory import TrajectoryReader
from matdx.store.access import Requester
from matdx.store.export_extxyz import SPLITS, split_of

ADA = Requester("ada")

CAMPAIGN = """\
name: training-set
owner: ada
access: public
license: CC-BY-4.0
tags: [mlip]
studies:
  - recipe: relax
    structures: [{bulk: [Cu, Al], cubic: true}]
    settings: {max_steps: 6}
  - recipe: md
    structures: [{bulk: [Cu], cubic: true}]
    settings: {steps: 40, sample_every: 4, timestep_fs: 2}
"""


@pytest.fixture
def computed(client, tmp_path):
    """The campaign, run to the end; its records' documents by id."""
    path = tmp_path / "training.yaml"
    path.write_text(CAMPAIGN)
    [status] = client.run(client.submit(path), poll_s=0.1, timeout_s=300)
    assert status.counts == {"COMPLETED": status.total}
    page = client.query(requester=ADA, documents=True, limit=1000)
    return {doc["record_id"]: doc for doc in page.items}


def read_all(directory: Path) -> dict[str, list]:
    from ase.io import read

    return {
        split: read(directory / f"{split}.xyz", index=":")
        if (directory / f"{split}.xyz").stat().st_size
        else []
        for split in SPLITS
    }


def test_extended_xyz_holds_every_stored_frame_with_its_reference_data(client, computed, tmp_path):
    report = client.export("extxyz", tmp_path / "xyz", requester=ADA, seed=7)
    frames = read_all(tmp_path / "xyz")
    labelled = {
        rid: doc
        for rid, doc in computed.items()
        if doc["results"]["energy"] is not None and doc["system"]
    }
    by_record: dict[str, list] = {}
    for split, atoms_list in frames.items():
        assert len(atoms_list) == report.frames[split]
        for atoms in atoms_list:
            assert atoms.info["split"] == split
            by_record.setdefault(atoms.info["record_id"], []).append(atoms)
    assert set(by_record) == set(labelled)
    trajectory_frames = 0
    for record_id, atoms_list in by_record.items():
        doc = labelled[record_id]
        expected_split = split_of(doc["system"]["structure_hash"], (0.8, 0.1, 0.1), seed=7)
        assert {a.info["split"] for a in atoms_list} == {expected_split}
        assert {a.info["config_type"] for a in atoms_list} == {doc["method"]["calculation"]}
        [own] = [a for a in atoms_list if a.info["frame"] == -1]
        assert own.info["REF_energy"] == doc["results"]["energy"]
        if doc["results"]["forces"] is not None:
            assert np.allclose(own.arrays["REF_forces"], doc["results"]["forces"], atol=1e-8)
        if doc["results"]["stress"] is not None:  # eV/Å³, ASE sign convention, row by row
            assert np.allclose(own.info["REF_stress"].reshape(3, 3), doc["results"]["stress"])
        assert np.allclose(own.positions, doc["system"]["cartesian_site_positions"], atol=1e-8)
        trajectories = [a for a in doc["artifacts"] if a["media_type"] == "application/x-h5md"]
        stored = [a for a in atoms_list if a.info["frame"] >= 0]
        for reference in trajectories:
            with TrajectoryReader(client.store.artifacts.path(reference["sha256"])) as traj:
                block, n_frames = traj.read(), traj.n_frames
            energies = block.observables["potential_energy"]
            for atoms in stored:
                i = atoms.info["frame"]
                assert atoms.info["REF_energy"] == pytest.approx(energies[i], abs=1e-12)
                assert np.allclose(atoms.arrays["REF_forces"], block.forces[i], atol=1e-8)
                assert np.allclose(atoms.positions, block.positions[i], atol=1e-8)
                assert "REF_stress" not in atoms.info
            # every stored frame is exported, except one identical to the record's own
            assert len(stored) in (n_frames, n_frames - 1)
            trajectory_frames += len(stored)
    md_records = [d for d in labelled.values() if d["method"]["calculation"] == "md"]
    relax_records = [d for d in labelled.values() if d["method"]["calculation"] == "relax"]
    assert len(md_records) == 1 and len(relax_records) == 2 and trajectory_frames > 10

    again = client.export("extxyz", tmp_path / "again", requester=ADA, seed=7)
    assert again.frames == report.frames
    for split in SPLITS:  # deterministic: the same bytes
        first = (tmp_path / "xyz" / f"{split}.xyz").read_bytes()
        assert first == (tmp_path / "again" / f"{split}.xyz").read_bytes()


def test_optimade_json_lines_validate_against_the_optimade_models(client, computed, tmp_path):
    from optimade.models import StructureResource

    written = client.export("optimade", tmp_path / "structures.jsonl", requester=ADA)
    lines = [json.loads(line) for line in (tmp_path / "structures.jsonl").read_text().splitlines()]
    assert lines[0] == {"x-optimade": {"api_version": "1.2.0"}}
    assert lines[1]["type"] == "info" and "_matdx_energy" in lines[1]["properties"]
    entries = lines[2:]
    assert len(entries) == written == sum(1 for d in computed.values() if d["system"])
    for entry in entries:
        resource = StructureResource(**entry)
        doc = computed[entry["id"]]
        attributes = entry["attributes"]
        assert resource.attributes.nsites == doc["system"]["nsites"]
        assert (
            resource.attributes.chemical_formula_reduced
            == doc["system"]["chemical_formula_reduced"]
        )
        custom = {k for k in attributes if k not in type(resource.attributes).model_fields}
        assert custom and all(k.startswith("_matdx_") for k in custom), custom
        assert attributes.get("_matdx_energy") == doc["results"]["energy"]
        assert attributes["_matdx_license"] == "CC-BY-4.0"


def test_ase_database_and_parquet_table(client, computed, tmp_path):
    import pyarrow.parquet as pq
    from ase.db import connect

    count = client.export("ase", tmp_path / "records.db", requester=ADA)
    with_structure = {rid: d for rid, d in computed.items() if d["system"]}
    assert count == len(with_structure)
    for row in connect(tmp_path / "records.db").select():
        doc = with_structure[row.record_id]
        atoms = row.toatoms()
        if doc["results"]["energy"] is not None:
            assert atoms.get_potential_energy() == pytest.approx(doc["results"]["energy"])
        if doc["results"]["stress"] is not None:
            assert np.allclose(atoms.get_stress(voigt=False), doc["results"]["stress"])
        assert row.calculation == doc["method"]["calculation"]

    rows = client.export("parquet", tmp_path / "results.parquet", requester=ADA)
    table = pq.read_table(tmp_path / "results.parquet").to_pylist()
    assert rows == len(table) == len(computed)
    for row in table:
        doc = computed[row["record_id"]]
        assert row["energy"] == doc["results"]["energy"]
        assert row["license"] == "CC-BY-4.0" and row["access"] == "public"
    assert any(row.get("property.temperature_mean_K") for row in table)  # the MD run's


def test_export_on_the_command_line(home, client, computed, monkeypatch, tmp_path):
    from tests.conftest import cli_user, matdx_cli

    cli_user(monkeypatch, "ada")  # the records are public: anyone exports them
    done = matdx_cli("export", "extxyz", str(tmp_path / "cli"), "--split", "0.5,0.25,0.25",
                     "--calculation", "md")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "train" in done.stdout and (tmp_path / "cli" / "train.xyz").exists()
    bad = matdx_cli("export", "extxyz", str(tmp_path / "bad"), "--split", "0.5,0.6,0.1")
    assert bad.returncode == 2 and "adding up to 1" in bad.stderr
    none = matdx_cli("export", "optimade", str(tmp_path / "x.jsonl"), "--license", "MIT")
    assert none.returncode == 0 and ": 0 record(s)" in none.stdout  # all are CC-BY-4.0
