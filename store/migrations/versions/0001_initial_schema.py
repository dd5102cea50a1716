"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-30 09:06:28.873819
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# JSON on SQLite, JSONB on PostgreSQL; None is SQL NULL.
JSON_DOCUMENT = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)


def upgrade() -> None:

    op.create_table(
        "artifacts",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_artifacts")),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("executor", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("directory", sa.Text(), nullable=False),
        sa.Column("scheduler_id", sa.String(length=100), nullable=True),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("workers", sa.Integer(), nullable=False),
        sa.Column("n_tasks", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "info",
            JSON_DOCUMENT,
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.create_index("ix_batches_state", ["state"], unique=False)

    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "spec",
            JSON_DOCUMENT,
            nullable=False,
        ),
        sa.Column(
            "executor",
            JSON_DOCUMENT,
            nullable=False,
        ),
        sa.Column(
            "tags",
            JSON_DOCUMENT,
            nullable=False,
        ),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("project", sa.String(length=100), nullable=False),
        sa.Column("access", sa.String(length=20), nullable=False),
        sa.Column("license", sa.String(length=64), nullable=False),
        sa.Column("force", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaigns_name"), ["name"], unique=False)

    op.create_table(
        "workflows",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("campaign_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("recipe", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "info",
            JSON_DOCUMENT,
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_workflows_campaign_id_campaigns")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
    )
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workflows_campaign_id"), ["campaign_id"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("campaign_id", sa.String(length=36), nullable=False),
        sa.Column("workflow_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("function", sa.String(length=300), nullable=False),
        sa.Column(
            "inputs",
            JSON_DOCUMENT,
            nullable=False,
        ),
        sa.Column(
            "resolved_inputs",
            JSON_DOCUMENT,
            nullable=True,
        ),
        sa.Column("input_hash", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("requeues", sa.Integer(), nullable=False),
        sa.Column(
            "corrections",
            JSON_DOCUMENT,
            nullable=False,
        ),
        sa.Column(
            "resources",
            JSON_DOCUMENT,
            nullable=False,
        ),
        sa.Column("force", sa.Boolean(), nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=True),
        sa.Column("run_dir", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("record_id", sa.String(length=36), nullable=True),
        sa.Column("reused_from", sa.String(length=36), nullable=True),
        sa.Column(
            "pending_response",
            JSON_DOCUMENT,
            nullable=True,
        ),
        sa.Column(
            "output_ref",
            JSON_DOCUMENT,
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_jobs_batch_id_batches")
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_jobs_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.id"], name=op.f("fk_jobs_workflow_id_workflows")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index("ix_jobs_campaign_state", ["campaign_id", "state"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_input_hash"), ["input_hash"], unique=False)
        batch_op.create_index("ix_jobs_state_position", ["state", "position"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_workflow_id"), ["workflow_id"], unique=False)

    op.create_table(
        "attempts",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=True),
        sa.Column("run_dir", sa.Text(), nullable=False),
        sa.Column("input_hash", sa.String(length=64), nullable=True),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "error",
            JSON_DOCUMENT,
            nullable=True,
        ),
        sa.Column(
            "corrections",
            JSON_DOCUMENT,
            nullable=False,
        ),
        sa.Column("record_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_attempts_batch_id_batches")
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_attempts_job_id_jobs")),
        sa.PrimaryKeyConstraint("job_id", "number", name=op.f("pk_attempts")),
    )
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_attempts_batch_id"), ["batch_id"], unique=False)

    op.create_table(
        "job_edges",
        sa.Column("parent_id", sa.String(length=36), nullable=False),
        sa.Column("child_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(["child_id"], ["jobs.id"], name=op.f("fk_job_edges_child_id_jobs")),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["jobs.id"], name=op.f("fk_job_edges_parent_id_jobs")
        ),
        sa.PrimaryKeyConstraint("parent_id", "child_id", name=op.f("pk_job_edges")),
    )
    with op.batch_alter_table("job_edges", schema=None) as batch_op:
        batch_op.create_index("ix_job_edges_child", ["child_id"], unique=False)

    op.create_table(
        "records",
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.String(length=36), nullable=False),
        sa.Column("workflow_id", sa.String(length=36), nullable=False),
        sa.Column("input_hash", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=True),
        sa.Column("calculation", sa.String(length=40), nullable=True),
        sa.Column("chemical_formula_reduced", sa.String(length=200), nullable=True),
        sa.Column("elements", sa.String(length=400), nullable=True),
        sa.Column("nsites", sa.Integer(), nullable=True),
        sa.Column("energy", sa.Float(), nullable=True),
        sa.Column("energy_per_atom", sa.Float(), nullable=True),
        sa.Column("structure_hash", sa.String(length=64), nullable=True),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("project", sa.String(length=100), nullable=False),
        sa.Column("access", sa.String(length=20), nullable=False),
        sa.Column("license", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "output",
            JSON_DOCUMENT,
            nullable=True,
        ),
        sa.Column(
            "document",
            JSON_DOCUMENT,
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_records_job_id_jobs")),
        sa.PrimaryKeyConstraint("record_id", name=op.f("pk_records")),
        sa.UniqueConstraint("job_id", "attempt", name="uq_records_job_attempt"),
    )
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.create_index("ix_records_campaign", ["campaign_id"], unique=False)
        batch_op.create_index("ix_records_formula", ["chemical_formula_reduced"], unique=False)
        batch_op.create_index(batch_op.f("ix_records_input_hash"), ["input_hash"], unique=False)

    op.create_table(
        "provenance",
        sa.Column("parent_id", sa.String(length=36), nullable=False),
        sa.Column("child_id", sa.String(length=36), nullable=False),
        sa.Column("relation", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(
            ["child_id"], ["records.record_id"], name=op.f("fk_provenance_child_id_records")
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["records.record_id"], name=op.f("fk_provenance_parent_id_records")
        ),
        sa.PrimaryKeyConstraint("parent_id", "child_id", "relation", name=op.f("pk_provenance")),
    )
    with op.batch_alter_table("provenance", schema=None) as batch_op:
        batch_op.create_index("ix_provenance_child", ["child_id"], unique=False)

    op.create_table(
        "record_artifacts",
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["record_id"], ["records.record_id"], name=op.f("fk_record_artifacts_record_id_records")
        ),
        sa.ForeignKeyConstraint(
            ["sha256"], ["artifacts.sha256"], name=op.f("fk_record_artifacts_sha256_artifacts")
        ),
        sa.PrimaryKeyConstraint("record_id", "role", "name", name=op.f("pk_record_artifacts")),
    )
    with op.batch_alter_table("record_artifacts", schema=None) as batch_op:
        batch_op.create_index("ix_record_artifacts_sha256", ["sha256"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("record_artifacts", schema=None) as batch_op:
        batch_op.drop_index("ix_record_artifacts_sha256")

    op.drop_table("record_artifacts")
    with op.batch_alter_table("provenance", schema=None) as batch_op:
        batch_op.drop_index("ix_provenance_child")

    op.drop_table("provenance")
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_records_input_hash"))
        batch_op.drop_index("ix_records_formula")
        batch_op.drop_index("ix_records_campaign")

    op.drop_table("records")
    with op.batch_alter_table("job_edges", schema=None) as batch_op:
        batch_op.drop_index("ix_job_edges_child")

    op.drop_table("job_edges")
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attempts_batch_id"))

    op.drop_table("attempts")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_workflow_id"))
        batch_op.drop_index("ix_jobs_state_position")
        batch_op.drop_index(batch_op.f("ix_jobs_input_hash"))
        batch_op.drop_index("ix_jobs_campaign_state")
        batch_op.drop_index(batch_op.f("ix_jobs_batch_id"))

    op.drop_table("jobs")
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workflows_campaign_id"))

    op.drop_table("workflows")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaigns_name"))

    op.drop_table("campaigns")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index("ix_batches_state")

    op.drop_table("batches")
    op.drop_table("artifacts")
