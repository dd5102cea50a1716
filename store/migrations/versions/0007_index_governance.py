"""the record index tables carry their record's governance (fast row-level security)

``record_elements``, ``record_tags`` and ``record_properties`` gain copies of their record's
``owner``, ``project``, ``access``, ``embargo_until`` and ``export_control``: the write path
(matdx.store.indexing) fills them with the index rows, and a trigger on ``records`` (both
backends) rewrites them whenever a record's governance changes.

On PostgreSQL the read policies of these tables test the copied columns, row by row, with the
same expression as the records' own policy, instead of looking the record up for every index
row (which made a user role's element, tag and property queries up to 27 times slower than the
table owner's). Their insert policies check that the copies equal the record's governance, so
nobody can publish an index row of a private record by writing ``public`` into it.

Also (PostgreSQL): every change of a job's state (a tick, a cancel, a rerun) is written to
``write_log`` with the authenticated role, by a statement trigger on ``jobs``; whoever may write
a job's campaign reads those entries.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 00:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("record_elements", "record_tags", "record_properties")
GOVERNANCE = ("owner", "project", "access", "embargo_until", "export_control")

# The access table as the records' policies of 0006 state it (a migration keeps its own copy).
INSIDER = (
    "(owner = current_user::text"
    " OR (access <> 'private' AND project = ANY ((SELECT matdx_projects())::text[]))"
    " OR (SELECT matdx_is_admin()))"
)
OUTSIDER_RESULTS = (
    "(NOT export_control AND (access = 'public'"
    " OR (access = 'embargoed' AND embargo_until <= now())))"
)
WRITER = "(r.owner = current_user::text OR (SELECT matdx_is_admin()))"


def _columns() -> list[sa.Column]:
    return [
        sa.Column("owner", sa.String(length=100), nullable=False, server_default=""),
        sa.Column("project", sa.String(length=100), nullable=False, server_default=""),
        # Until filled, a row is private to nobody: fail closed.
        sa.Column("access", sa.String(length=20), nullable=False, server_default="private"),
        sa.Column("embargo_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("export_control", sa.Boolean(), nullable=False, server_default=sa.true()),
    ]


INDEX_MATCHES = f"""
CREATE OR REPLACE FUNCTION matdx_record_index_matches(rid text, owner_ text, project_ text,
    access_ text, embargo_until_ timestamptz, export_control_ boolean) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM records r WHERE r.record_id = rid AND {WRITER}
                   AND r.owner = owner_ AND r.project = project_ AND r.access = access_
                   AND r.embargo_until IS NOT DISTINCT FROM embargo_until_
                   AND r.export_control = export_control_)
$$;
"""

# The statements both backends' triggers run: copy the record's governance onto its index rows.
SYNC_UPDATES = "".join(
    f"""    UPDATE {table} SET owner = NEW.owner, project = NEW.project, access = NEW.access,
        embargo_until = NEW.embargo_until, export_control = NEW.export_control
        WHERE record_id = NEW.record_id;
"""
    for table in TABLES
)

POSTGRESQL_SYNC = (
    """
CREATE OR REPLACE FUNCTION matdx_sync_index_governance() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
"""
    + SYNC_UPDATES
    + """    RETURN NULL;
END
$$;
CREATE TRIGGER matdx_sync_index_governance
    AFTER UPDATE OF owner, project, access, embargo_until, export_control ON records
    FOR EACH ROW
    WHEN ((OLD.owner, OLD.project, OLD.access, OLD.embargo_until, OLD.export_control)
          IS DISTINCT FROM
          (NEW.owner, NEW.project, NEW.access, NEW.embargo_until, NEW.export_control))
    EXECUTE FUNCTION matdx_sync_index_governance();
"""
)

SQLITE_SYNC = (
    """
CREATE TRIGGER matdx_sync_index_governance
AFTER UPDATE OF owner, project, access, embargo_until, export_control ON records
BEGIN
"""
    + SYNC_UPDATES
    + "END"
)


JOB_STATES = """
CREATE OR REPLACE FUNCTION matdx_log_job_states() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO write_log (at, db_role, operation, table_name, row_id, before, after)
    SELECT now(), session_user, 'UPDATE', 'jobs', n.id, jsonb_build_object('state', o.state),
           jsonb_build_object('state', n.state, 'campaign_id', n.campaign_id)
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE o.state IS DISTINCT FROM n.state;
    RETURN NULL;
END
$$;
CREATE TRIGGER matdx_log_job_states AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION matdx_log_job_states();
"""
WRITE_LOG_READ_0006 = (
    "db_role = current_user::text OR (SELECT matdx_is_admin())"
    " OR (table_name = 'records' AND matdx_record_writable(row_id))"
    " OR (table_name = 'campaigns' AND matdx_campaign_writable(row_id))"
)
WRITE_LOG_READ = WRITE_LOG_READ_0006 + " OR (table_name = 'jobs' AND matdx_job_writable(row_id))"


def _backfill() -> None:
    for table in TABLES:
        assignments = ", ".join(
            f"{column} = (SELECT r.{column} FROM records r WHERE r.record_id = {table}.record_id)"
            for column in GOVERNANCE
        )
        op.execute(f"UPDATE {table} SET {assignments}")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table in TABLES:
        for column in _columns():
            op.add_column(table, column)
    _backfill()
    op.create_index(
        "ix_records_embargoed",
        "records",
        ["record_id"],
        postgresql_where=sa.text("access = 'embargoed'"),
        sqlite_where=sa.text("access = 'embargoed'"),
    )
    if not postgresql:
        op.execute(SQLITE_SYNC)
        return
    op.execute(POSTGRESQL_SYNC)
    op.execute(INDEX_MATCHES)
    op.execute(JOB_STATES)
    op.execute("DROP POLICY matdx_read ON write_log")
    op.execute(f"CREATE POLICY matdx_read ON write_log FOR SELECT USING ({WRITE_LOG_READ})")
    for table in TABLES:
        op.execute(f"DROP POLICY matdx_read ON {table}")
        op.execute(f"DROP POLICY matdx_insert ON {table}")
        op.execute(
            f"CREATE POLICY matdx_read ON {table} FOR SELECT"
            f" USING ({INSIDER} OR {OUTSIDER_RESULTS})"
        )
        op.execute(
            f"CREATE POLICY matdx_insert ON {table} FOR INSERT WITH CHECK"
            " (matdx_record_index_matches(record_id, owner, project, access, embargo_until,"
            " export_control))"
        )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        for table in TABLES:
            op.execute(f"DROP POLICY matdx_read ON {table}")
            op.execute(f"DROP POLICY matdx_insert ON {table}")
            op.execute(
                f"CREATE POLICY matdx_read ON {table} FOR SELECT"
                " USING (matdx_record_readable(record_id))"
            )
            op.execute(
                f"CREATE POLICY matdx_insert ON {table} FOR INSERT"
                " WITH CHECK (matdx_record_writable(record_id))"
            )
        op.execute(
            "DROP FUNCTION matdx_record_index_matches(text, text, text, text, timestamptz,"
            " boolean)"
        )
        op.execute("DROP POLICY matdx_read ON write_log")
        op.execute(
            f"CREATE POLICY matdx_read ON write_log FOR SELECT USING ({WRITE_LOG_READ_0006})"
        )
        op.execute("DROP TRIGGER matdx_log_job_states ON jobs")
        op.execute("DROP FUNCTION matdx_log_job_states()")
        op.execute("DROP TRIGGER matdx_sync_index_governance ON records")
        op.execute("DROP FUNCTION matdx_sync_index_governance()")
    else:
        op.execute("DROP TRIGGER matdx_sync_index_governance")
    op.drop_index("ix_records_embargoed", table_name="records")
    for table in TABLES:
        for column in reversed(GOVERNANCE):
            op.drop_column(table, column)
