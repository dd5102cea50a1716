"""governance, search indexes and the audit log

Records: embargo, export control, licence as a nullable SPDX expression, no foreign key to
jobs (imported records keep job ids of their own store), indexes for queries. Side tables
record_elements, record_tags and record_properties, filled from the existing documents.
Campaigns: embargo and export-control defaults. The audit_log table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:00:00
"""

import math
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from matdx.store.licenses import LicenseError, normalize_license

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
BATCH = 2000


def _scalars(document: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """The record's indexed properties, as matdx.store.indexing derived them at 0002."""
    results = document.get("results") or {}
    named = {
        k: results.get(k)
        for k in ("energy", "energy_per_atom", "band_gap", "fermi_level", "total_magnetization")
    }
    named.update(results.get("properties") or {})
    for name, value in named.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            yield name[:100], float(value)


def _v2_license(text: str | None) -> str | None:
    """A v1 licence text as v2 stores it: an SPDX expression, ``LicenseRef-<text>`` for
    anything else, None for none (the rule of matdx.store.records at schema v2)."""
    if not text:
        return None
    try:
        return normalize_license(text)
    except LicenseError:
        return "LicenseRef-" + (re.sub(r"[^A-Za-z0-9.\-]+", "-", text).strip("-") or "unknown")


def _v2_governance(document: dict[str, Any]) -> dict[str, Any]:
    """The governance columns of a v1 record, as its v2 document has them: an embargo
    without a date becomes ``group`` access; a date without an embargo is dropped."""
    governance = document.get("governance") or {}
    access = governance.get("access") or "private"
    until = governance.get("embargo_until")
    if access == "embargoed" and not until:
        access = "group"
    embargo_until = None
    if access == "embargoed":
        embargo_until = datetime.fromisoformat(str(until).replace("Z", "+00:00"))
        if embargo_until.tzinfo is None:
            embargo_until = embargo_until.replace(tzinfo=UTC)
    return {
        "access": access,
        "license": _v2_license(governance.get("license")),
        "embargo_until": embargo_until,
    }


def _backfill_campaigns() -> None:
    """Campaign defaults that v2 records accept: no dateless embargo, SPDX licences."""
    bind = op.get_bind()
    campaigns = sa.table(
        "campaigns", sa.column("id", sa.String), sa.column("license", sa.String)
    )
    op.execute(sa.text("UPDATE campaigns SET access = 'group' WHERE access = 'embargoed'"))
    for campaign_id, text in bind.execute(
        sa.select(campaigns.c.id, campaigns.c.license).where(campaigns.c.license != "")
    ).all():
        bind.execute(
            campaigns.update()
            .where(campaigns.c.id == campaign_id)
            .values(license=_v2_license(text) or "")
        )


def _backfill() -> None:
    bind = op.get_bind()
    records = sa.table(
        "records",
        sa.column("record_id", sa.String),
        sa.column("document", JSON_DOCUMENT),
        sa.column("access", sa.String),
        sa.column("license", sa.String),
        sa.column("embargo_until", sa.DateTime(timezone=True)),
    )
    governance_update = (
        records.update()
        .where(records.c.record_id == sa.bindparam("key"))
        .values(
            access=sa.bindparam("access"),
            license=sa.bindparam("license"),
            embargo_until=sa.bindparam("embargo_until"),
        )
    )
    elements = sa.table("record_elements", sa.column("element"), sa.column("record_id"))
    tags = sa.table("record_tags", sa.column("tag"), sa.column("record_id"))
    properties = sa.table(
        "record_properties", sa.column("record_id"), sa.column("name"), sa.column("value")
    )
    last = ""
    while True:
        rows = bind.execute(
            sa.select(records.c.record_id, records.c.document)
            .where(records.c.record_id > last)
            .order_by(records.c.record_id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        element_rows, tag_rows, property_rows, governance_rows = [], [], [], []
        for record_id, document in rows:
            governance_rows.append({"key": record_id, **_v2_governance(document)})
            system = document.get("system") or {}
            element_rows += [
                {"element": e, "record_id": record_id}
                for e in sorted(set(system.get("elements") or []))
            ]
            tag_rows += [
                {"tag": t[:100], "record_id": record_id}
                for t in sorted(set(document.get("tags") or []))
            ]
            property_rows += [
                {"record_id": record_id, "name": n, "value": v}
                for n, v in dict(_scalars(document)).items()
            ]
        for table, values in (
            (elements, element_rows),
            (tags, tag_rows),
            (properties, property_rows),
        ):
            if values:
                bind.execute(table.insert(), values)
        bind.execute(governance_update, governance_rows)
        last = rows[-1][0]


def upgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("embargo_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("export_control", sa.Boolean(), nullable=False, server_default=sa.false())
        )

    # On SQLite the table is rebuilt; the new columns go before the large document and
    # output, so that reading them (the access filter) never walks a document's overflow pages.
    with op.batch_alter_table(
        "records",
        schema=None,
        partial_reordering=[
            ("license", "embargo_until", "export_control", "created_at", "output", "document")
        ],
    ) as batch_op:
        batch_op.drop_constraint("fk_records_job_id_jobs", type_="foreignkey")
        batch_op.alter_column(
            "license",
            existing_type=sa.String(length=64),
            type_=sa.String(length=200),
            nullable=True,
        )
        batch_op.add_column(sa.Column("embargo_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("export_control", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index("ix_records_code_calculation", ["code", "calculation"], unique=False)
        batch_op.create_index("ix_records_nsites", ["nsites"], unique=False)
        batch_op.create_index("ix_records_owner", ["owner"], unique=False)
        batch_op.create_index(
            "ix_records_access_check",
            ["record_id", "owner", "project", "access", "export_control", "embargo_until"],
            unique=True,
        )
    op.execute(sa.text("UPDATE records SET license = NULL WHERE license = ''"))
    bind = op.get_bind()
    if (
        bind.dialect.name == "postgresql"
        and bind.execute(
            sa.text(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                "WHERE name = 'default_toast_compression'"
            )
        ).scalar()
    ):
        # Documents of a few kB are compressed on write: lz4 costs a fraction of pglz's CPU
        # time, which bounds the rate of bulk inserts.
        for column in ("document", "output"):
            op.execute(sa.text(f"ALTER TABLE records ALTER COLUMN {column} SET COMPRESSION lz4"))

    op.create_table(
        "record_elements",
        sa.Column("element", sa.String(length=3), nullable=False),
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["records.record_id"],
            name=op.f("fk_record_elements_record_id_records"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("element", "record_id", name=op.f("pk_record_elements")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("record_elements", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_record_elements_record_id"), ["record_id"], unique=False
        )

    op.create_table(
        "record_tags",
        sa.Column("tag", sa.String(length=100), nullable=False),
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["records.record_id"],
            name=op.f("fk_record_tags_record_id_records"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tag", "record_id", name=op.f("pk_record_tags")),
        sqlite_with_rowid=False,
    )

    op.create_table(
        "record_properties",
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["records.record_id"],
            name=op.f("fk_record_properties_record_id_records"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("record_id", "name", name=op.f("pk_record_properties")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("record_properties", schema=None) as batch_op:
        batch_op.create_index(
            "ix_record_properties_name_value", ["name", "value", "record_id"], unique=False
        )

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("record_id", sa.String(length=36), nullable=True),
        sa.Column("campaign_id", sa.String(length=36), nullable=True),
        sa.Column("before", JSON_DOCUMENT, nullable=False),
        sa.Column("after", JSON_DOCUMENT, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_campaign", ["campaign_id"], unique=False)
        batch_op.create_index("ix_audit_log_record", ["record_id"], unique=False)

    _backfill()
    _backfill_campaigns()


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("record_properties")
    op.drop_table("record_tags")
    op.drop_table("record_elements")
    op.execute(sa.text("UPDATE records SET license = '' WHERE license IS NULL"))
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.drop_index("ix_records_access_check")
        batch_op.drop_index("ix_records_owner")
        batch_op.drop_index("ix_records_nsites")
        batch_op.drop_index("ix_records_code_calculation")
        batch_op.drop_column("export_control")
        batch_op.drop_column("embargo_until")
        batch_op.alter_column(
            "license",
            existing_type=sa.String(length=200),
            type_=sa.String(length=64),
            nullable=False,
        )
        batch_op.create_foreign_key("fk_records_job_id_jobs", "jobs", ["job_id"], ["id"])
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("export_control")
        batch_op.drop_column("embargo_until")
