"""Synthetic records for store tests, written through the store's real insert path."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import bulk
from sqlalchemy import insert, select

from matdx.store.models import Artifact, Record, RecordArtifact, utcnow
from matdx.store.records import (
    ArtifactReference,
    CalculationRecord,
    Governance,
    Method,
    Results,
    Run,
    System,
)
from matdx.store.store import Store
from matdx.store.system import optimade_structure


def crystal(formula: str = "Cu", a: float = 3.6) -> Atoms:
    """A small crystal: an element or a rocksalt binary."""
    if len(formula) <= 2:
        return bulk(formula, "fcc", a=a)
    return bulk(formula, "rocksalt", a=a + 1.0)


def document(
    atoms: Atoms | None = None,
    *,
    energy: float | None = -1.0,
    band_gap: float | None = None,
    properties: dict[str, Any] | None = None,
    code: str = "emt",
    calculation: str = "static",
    tags: Sequence[str] = (),
    campaign_id: str = "c0000000-0000-0000-0000-000000000000",
    owner: str = "ada",
    project: str = "",
    access: str = "private",
    embargo_until: datetime | None = None,
    license: str | None = None,
    export_control: bool = False,
    artifacts: Sequence[ArtifactReference] = (),
    record_id: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """A valid current-version record document of ``atoms`` (Cu fcc by default) with forces
    and stress drawn from ``seed``."""
    atoms = crystal() if atoms is None else atoms
    rng = np.random.default_rng(seed)
    fields = optimade_structure(
        atoms.cell.array, atoms.positions, atoms.get_chemical_symbols(), atoms.pbc
    )
    n = len(atoms)
    stress = rng.normal(scale=0.01, size=(3, 3))
    record = CalculationRecord(
        record_id=record_id or str(uuid.uuid4()),
        input_hash=uuid.uuid4().hex * 2,
        campaign_id=campaign_id,
        workflow_id=str(uuid.uuid4()),
        job_id=str(uuid.uuid4()),
        job_name=calculation,
        function=f"matdx.recipes.{calculation}:{calculation}",
        attempt=1,
        tags=list(tags),
        system=System(**fields),
        method=Method(code=code, calculation=calculation),
        results=Results(
            energy=energy,
            energy_per_atom=None if energy is None else energy / n,
            forces=rng.normal(scale=0.1, size=(n, 3)).tolist(),
            stress=((stress + stress.T) / 2).tolist(),
            stress_convention="ase",
            band_gap=band_gap,
            properties=dict(properties or {}),
        ),
        artifacts=list(artifacts),
        run=Run(status="completed", matdx_version="test"),
        governance=Governance(
            owner=owner,
            project=project,
            access=access,
            embargo_until=embargo_until,
            license=license,
            export_control=export_control,
        ),
    )
    return record.model_dump(mode="json")


def insert_documents(store: Store, *documents: dict[str, Any]) -> list[str]:
    """Insert records as the harvest does (artifact rows and links included); their ids."""
    with store.transaction() as session:
        objects = {
            a["sha256"]: {
                "sha256": a["sha256"],
                "size": a["size"],
                "media_type": a["media_type"],
                "created_at": utcnow(),
            }
            for d in documents
            for a in d["artifacts"]
        }
        known = set(session.scalars(select(Artifact.sha256)))
        missing = [row for sha, row in objects.items() if sha not in known]
        if missing:
            session.execute(insert(Artifact), missing)
        session.execute(insert(Record), [{"document": d, "output": None} for d in documents])
        links = [
            {
                "record_id": d["record_id"],
                "role": a["role"],
                "name": a["name"],
                "sha256": a["sha256"],
            }
            for d in documents
            for a in d["artifacts"]
        ]
        if links:
            session.execute(insert(RecordArtifact), links)
    return [d["record_id"] for d in documents]


def artifact(store: Store, content: bytes, name: str = "out.txt") -> ArtifactReference:
    """Put ``content`` into the artifact store; its reference as a record output."""
    sha256, size = store.artifacts.put_bytes(content)
    return ArtifactReference(
        role="output", name=name, media_type="text/plain", size=size, sha256=sha256
    )
