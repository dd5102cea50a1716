"""Tables of the store (SQLAlchemy 2 declarative models).

One :class:`Base` and one ``MetaData`` with a naming convention, so that Alembic migrations name
constraints identically on SQLite and PostgreSQL. Columns use ``Mapped[...]`` with
``mapped_column``; JSON columns become JSONB on PostgreSQL.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Artifact",
    "Attempt",
    "AttemptState",
    "AuditEntry",
    "Base",
    "Batch",
    "BatchState",
    "Campaign",
    "Job",
    "JobEdge",
    "JobState",
    "ProvenanceEdge",
    "Record",
    "RecordArtifact",
    "RecordElement",
    "RecordProperty",
    "RecordTag",
    "Workflow",
    "WriteEntry",
    "utcnow",
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# none_as_null: Python None is SQL NULL (not the JSON text 'null'), so IS NULL tests work.
JSONDocument = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar = {dict[str, Any]: JSONDocument, list[Any]: JSONDocument}


uuid_pk = Annotated[str, mapped_column(String(36), primary_key=True)]
uuid_fk_campaign = Annotated[str, mapped_column(ForeignKey("campaigns.id"), index=True)]
timestamp = Annotated[datetime, mapped_column(DateTime(timezone=True), default=utcnow)]
optional_timestamp = Annotated[datetime | None, mapped_column(DateTime(timezone=True))]


class JobState(enum.StrEnum):
    """Where a job is. The allowed moves are in ``matdx.workflows.states``."""

    WAITING = "WAITING"  # some parent has not completed
    READY = "READY"  # inputs resolved; may be launched
    RUNNING = "RUNNING"  # an attempt is in a batch (queued, starting or running)
    ERRORED = "ERRORED"  # the last attempt failed; the recover step decides what next
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"  # for good: out of retries or not recoverable
    CANCELLED = "CANCELLED"


class AttemptState(enum.StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    LOST = "LOST"  # the batch ended without a result: requeued without spending a retry


class BatchState(enum.StrEnum):
    LAUNCHING = "LAUNCHING"  # claimed jobs, run dirs being written, not yet confirmed started
    ACTIVE = "ACTIVE"  # queued or running
    ENDED = "ENDED"  # fully harvested


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[uuid_pk]
    name: Mapped[str] = mapped_column(String(200), index=True)
    created_at: Mapped[timestamp]
    spec: Mapped[dict[str, Any]]  # the validated campaign file
    executor: Mapped[dict[str, Any]]
    tags: Mapped[list[Any]] = mapped_column(default=list)
    owner: Mapped[str] = mapped_column(String(100), default="")
    project: Mapped[str] = mapped_column(String(100), default="")
    access: Mapped[str] = mapped_column(String(20), default="private")
    license: Mapped[str] = mapped_column(String(64), default="")
    # Governance defaults for the campaign's records (see matdx.store.access).
    embargo_until: Mapped[optional_timestamp]
    export_control: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    force: Mapped[bool] = mapped_column(Boolean, default=False)


class Workflow(Base):
    __tablename__ = "workflows"

    id: Mapped[uuid_pk]
    campaign_id: Mapped[uuid_fk_campaign]
    name: Mapped[str] = mapped_column(String(200))
    recipe: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[timestamp]
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Job(Base):
    """A node of a workflow. Each launch is a numbered :class:`Attempt`."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_campaign_state", "campaign_id", "state"),
        Index("ix_jobs_state_position", "state", "position"),
    )

    id: Mapped[uuid_pk]
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"))
    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # submission order, for fair launching
    name: Mapped[str] = mapped_column(String(200))
    function: Mapped[str] = mapped_column(String(300))
    inputs: Mapped[dict[str, Any]]  # encoded args/kwargs as submitted, references included
    # Inputs with references replaced by the parents' outputs (only for jobs with references).
    resolved_inputs: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    input_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str] = mapped_column(Text, default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # number of the latest attempt
    failures: Mapped[int] = mapped_column(Integer, default=0)  # failed attempts (spend retries)
    retries: Mapped[int] = mapped_column(Integer, default=2)
    requeues: Mapped[int] = mapped_column(Integer, default=0)  # lost attempts (free)
    corrections: Mapped[list[Any]] = mapped_column(default=list)
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), index=True)
    run_dir: Mapped[str | None] = mapped_column(Text)
    # Lease on the job while a tick works on it (PostgreSQL claims with SKIP LOCKED).
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires: Mapped[optional_timestamp]
    record_id: Mapped[str | None] = mapped_column(String(36))  # record holding the output
    reused_from: Mapped[str | None] = mapped_column(String(36))  # job whose result was reused
    # Graph changes returned by the job, waiting for the expand step.
    pending_response: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    # When a Response replaced this job: its output is this (encoded) reference structure.
    output_ref: Mapped[dict[str, Any] | list[Any] | None] = mapped_column(JSONDocument)
    created_at: Mapped[timestamp]
    updated_at: Mapped[timestamp]


class JobEdge(Base):
    __tablename__ = "job_edges"
    __table_args__ = (Index("ix_job_edges_child", "child_id"),)

    parent_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    child_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)


class Attempt(Base):
    __tablename__ = "attempts"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(12))
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), index=True)
    run_dir: Mapped[str] = mapped_column(Text)
    input_hash: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(200), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    # type, message, last_line, kind (science | infrastructure), correction (or None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    corrections: Mapped[list[Any]] = mapped_column(default=list)  # applied before this attempt
    record_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[timestamp]
    started_at: Mapped[optional_timestamp]
    finished_at: Mapped[optional_timestamp]


class Batch(Base):
    """One launch of a set of jobs: a local task-farm process or a batch-queue job."""

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_state", "state"),)

    id: Mapped[uuid_pk]
    executor: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(12))
    directory: Mapped[str] = mapped_column(Text)
    scheduler_id: Mapped[str | None] = mapped_column(String(100))
    host: Mapped[str] = mapped_column(String(200), default="")
    workers: Mapped[int] = mapped_column(Integer, default=1)
    n_tasks: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(Text, default="")
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[timestamp]
    started_at: Mapped[optional_timestamp]
    ended_at: Mapped[optional_timestamp]
    # The database role that created the batch (PostgreSQL fills it; a tick sees its own).
    owner: Mapped[str | None] = mapped_column(String(100))


class Record(Base):
    """One calculation record (ARCHITECTURE.md, "The calculation record").

    ``document`` holds the whole record and is the single source of truth: the other columns,
    and the rows of :class:`RecordElement`, :class:`RecordTag` and :class:`RecordProperty`,
    are copies of what queries filter on, derived from it on every insert
    (:mod:`matdx.store.indexing`). ``output`` is the job's encoded output, which references to
    the job resolve against.

    ``job_id`` names the job that made the record but is no foreign key: records imported
    from another store (``matdx import``) keep the ids of jobs that only exist there.
    """

    __tablename__ = "records"
    __table_args__ = (
        # Harvesting is idempotent: one record per job attempt, enforced by the database.
        UniqueConstraint("job_id", "attempt", name="uq_records_job_attempt"),
        Index("ix_records_campaign", "campaign_id"),
        Index("ix_records_formula", "chemical_formula_reduced"),
        Index("ix_records_code_calculation", "code", "calculation"),
        Index("ix_records_functional", "functional"),
        Index("ix_records_potential", "potential"),
        Index("ix_records_nsites", "nsites"),
        Index("ix_records_owner", "owner"),
        # The access filter's columns by record id: a query checks each candidate record in
        # this small index, never in the table rows (which hold the documents). No index
        # starts with access or project: the filter ORs owner, project and access, and SQLite
        # would drive queries from a multi-index OR over most of the table instead of from
        # their selective criteria (elements, properties, formula, ...).
        Index(
            "ix_records_access_check",
            "record_id",
            "owner",
            "project",
            "access",
            "export_control",
            "embargo_until",
            unique=True,  # (record_id is unique anyway) so that SQLite prefers it for lookups
        ),
        # The embargoed records alone: what record_discovery adds to a person's query
        # (matdx.store.discovery) without reading the whole table.
        Index(
            "ix_records_embargoed",
            "record_id",
            postgresql_where=text("access = 'embargoed'"),
            sqlite_where=text("access = 'embargoed'"),
        ),
    )

    record_id: Mapped[uuid_pk]
    schema_version: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str] = mapped_column(String(36))
    attempt: Mapped[int] = mapped_column(Integer)
    campaign_id: Mapped[str] = mapped_column(String(36))
    workflow_id: Mapped[str] = mapped_column(String(36))
    input_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(12))
    code: Mapped[str | None] = mapped_column(String(40))
    calculation: Mapped[str | None] = mapped_column(String(40))
    functional: Mapped[str | None] = mapped_column(String(100))
    potential: Mapped[str | None] = mapped_column(String(400))  # pair style: potential files
    chemical_formula_reduced: Mapped[str | None] = mapped_column(String(200))
    elements: Mapped[str | None] = mapped_column(String(400))  # ",Cu,O," (display; see below)
    nsites: Mapped[int | None] = mapped_column(Integer)
    energy: Mapped[float | None] = mapped_column(Float)  # eV
    energy_per_atom: Mapped[float | None] = mapped_column(Float)  # eV/atom
    structure_hash: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(100), default="")
    project: Mapped[str] = mapped_column(String(100), default="")
    access: Mapped[str] = mapped_column(String(20), default="private")
    license: Mapped[str | None] = mapped_column(String(200))  # SPDX expression; None: unknown
    embargo_until: Mapped[optional_timestamp]
    export_control: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[timestamp]
    output: Mapped[dict[str, Any] | list[Any] | None] = mapped_column(JSONDocument)
    document: Mapped[dict[str, Any]]


class IndexGovernance:
    """Copies of the record's governance on each of its index rows (migration 0007).

    Filled by the write path (matdx.store.indexing) and kept equal to the record's by a
    trigger on ``records``; on PostgreSQL the index tables' row-level security policies test
    them row by row instead of looking up the record. Until filled, a row is private and
    export-controlled (fail closed).
    """

    owner: Mapped[str] = mapped_column(String(100), server_default="")
    project: Mapped[str] = mapped_column(String(100), server_default="")
    access: Mapped[str] = mapped_column(String(20), server_default="private")
    embargo_until: Mapped[optional_timestamp]
    export_control: Mapped[bool] = mapped_column(Boolean, server_default=true())


class RecordElement(IndexGovernance, Base):
    """The elements of a record's structure: the index of elements queries.

    A table rather than a JSON array because both backends index it the same way (B-tree on
    (element, record_id)), so "has all", "has any" and "has only" are one SQL for SQLite and
    PostgreSQL, planned from ordinary column statistics.
    """

    __tablename__ = "record_elements"
    # Small rows: on SQLite, kept in the primary-key B-tree itself (no rowid table besides).
    __table_args__ = ({"sqlite_with_rowid": False},)

    element: Mapped[str] = mapped_column(String(3), primary_key=True)
    record_id: Mapped[str] = mapped_column(
        ForeignKey("records.record_id", ondelete="CASCADE"), primary_key=True, index=True
    )


class RecordTag(IndexGovernance, Base):
    """The tags of a record (from its campaign): the index of tag queries."""

    __tablename__ = "record_tags"
    __table_args__ = ({"sqlite_with_rowid": False},)

    tag: Mapped[str] = mapped_column(String(100), primary_key=True)
    # No index by record_id: nothing looks tags up by record (records are never deleted).
    record_id: Mapped[str] = mapped_column(
        ForeignKey("records.record_id", ondelete="CASCADE"), primary_key=True
    )


class RecordProperty(IndexGovernance, Base):
    """Scalar results of a record by name (``band_gap``, ``energy_per_atom``, ``B0_GPa``, ...):
    the index of property-range queries. Units are those of the record's ``results`` (eV,
    eV/atom) or are in the name."""

    __tablename__ = "record_properties"
    __table_args__ = (
        Index("ix_record_properties_name_value", "name", "value", "record_id"),
        {"sqlite_with_rowid": False},
    )

    record_id: Mapped[str] = mapped_column(
        ForeignKey("records.record_id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class AuditEntry(Base):
    """One change of governance (owner, project, access, embargo, licence, export control)
    of a record or of a campaign's defaults: who, when, why, and the values before and
    after."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_record", "record_id"),
        Index("ix_audit_log_campaign", "campaign_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[timestamp]
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(40))
    record_id: Mapped[str | None] = mapped_column(String(36))
    campaign_id: Mapped[str | None] = mapped_column(String(36))
    before: Mapped[dict[str, Any]]
    after: Mapped[dict[str, Any]]
    reason: Mapped[str] = mapped_column(Text, default="")
    # The authenticated database role that wrote the entry, set by a trigger on PostgreSQL
    # (migration 0006), whatever the writer claims in ``actor``; None on SQLite.
    db_role: Mapped[str | None] = mapped_column(String(100))


class WriteEntry(Base):
    """The database's own trail (PostgreSQL triggers, migration 0006): every insert,
    governance change and deletion of a record or campaign, with the authenticated role
    that made it. Written only by the database; empty on SQLite (one account's store)."""

    __tablename__ = "write_log"
    __table_args__ = (Index("ix_write_log_row", "table_name", "row_id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[timestamp]
    db_role: Mapped[str] = mapped_column(String(100))
    operation: Mapped[str] = mapped_column(String(10))  # INSERT | UPDATE | DELETE
    table_name: Mapped[str] = mapped_column(String(40))
    row_id: Mapped[str] = mapped_column(String(36))
    before: Mapped[dict[str, Any]]  # governance before ({} for an insert)
    after: Mapped[dict[str, Any]]  # governance after ({} for a deletion)


class ProvenanceEdge(Base):
    """``parent`` record was used to make ``child`` (``relation``: input, retry_of, ...)."""

    __tablename__ = "provenance"
    __table_args__ = (Index("ix_provenance_child", "child_id"),)

    parent_id: Mapped[str] = mapped_column(ForeignKey("records.record_id"), primary_key=True)
    child_id: Mapped[str] = mapped_column(ForeignKey("records.record_id"), primary_key=True)
    relation: Mapped[str] = mapped_column(String(20), primary_key=True)


class Artifact(Base):
    """A content-addressed object: a file under ``objects/`` named by its sha256."""

    __tablename__ = "artifacts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)  # bytes
    media_type: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[timestamp]


class RecordArtifact(Base):
    __tablename__ = "record_artifacts"
    __table_args__ = (Index("ix_record_artifacts_sha256", "sha256"),)

    record_id: Mapped[str] = mapped_column(ForeignKey("records.record_id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(10), primary_key=True)  # input | output
    name: Mapped[str] = mapped_column(String(300), primary_key=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("artifacts.sha256"))
