"""database roles, row-level security and the database's own audit trail (PostgreSQL)

Both backends: batches gain ``owner`` (on PostgreSQL the role that created them, set by a
trigger) and the audit log gains
``db_role`` (the authenticated role that wrote an entry).

PostgreSQL only (SQLite is one account's store, see matdx.store.identity):

- Group roles, created if missing (they are cluster-wide): ``matdx_readers`` (may read),
  ``matdx_users`` (may read and write; every person's login role is a member),
  ``matdx_admin`` (the administrator) and one ``matdx_project_<name>`` per project.
- Row-level security on every table but the API tokens (which users cannot read at all):
  the access table of matdx.store.access, judged on the connected role (``current_user``),
  its project roles and ``matdx_admin``. The store's owner (who runs this migration) is not
  subject to the policies.
- ``record_discovery``: the discovery metadata of every record the role may discover
  (embargoed ones included), since row-level security can only hide whole rows of
  ``records``.
- ``write_log`` (both backends; written on PostgreSQL only): triggers (SECURITY DEFINER)
  log, with the authenticated role (``session_user``), every insert, governance change and
  deletion of a record or campaign; nobody else may write it. Any audit entry's ``db_role``
  is set by the database, whatever its writer says.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
PROJECT_PREFIX = "matdx_project_"

ROLES = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'matdx_readers') THEN
        CREATE ROLE matdx_readers NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'matdx_users') THEN
        CREATE ROLE matdx_users NOLOGIN IN ROLE matdx_readers;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'matdx_admin') THEN
        CREATE ROLE matdx_admin NOLOGIN IN ROLE matdx_users;
    END IF;
END
$$;
"""

FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION matdx_is_admin() RETURNS boolean LANGUAGE sql STABLE
AS $$ SELECT pg_has_role(current_user, 'matdx_admin', 'MEMBER') $$;

CREATE OR REPLACE FUNCTION matdx_projects() RETURNS text[] LANGUAGE sql STABLE
AS $$
    SELECT coalesce(array_agg(substr(rolname, {len(PROJECT_PREFIX) + 1})), ARRAY[]::text[])
    FROM pg_roles
    WHERE starts_with(rolname, '{PROJECT_PREFIX}') AND pg_has_role(current_user, oid, 'MEMBER')
$$;

CREATE OR REPLACE FUNCTION matdx_tick_owner() RETURNS text LANGUAGE sql STABLE
AS $$ SELECT nullif(current_setting('matdx.tick_owner', true), '') $$;
"""


def insider(t: str = "") -> str:
    """The owner, the project's members (unless private) and the administrator."""
    return (
        f"({t}owner = current_user::text"
        f" OR ({t}access <> 'private' AND {t}project = ANY ((SELECT matdx_projects())::text[]))"
        f" OR (SELECT matdx_is_admin()))"
    )


def outsider_read(t: str = "") -> str:
    """What everyone may discover."""
    return f"(NOT {t}export_control AND {t}access IN ('public', 'embargoed'))"


def outsider_results(t: str = "") -> str:
    """Whose results everyone may read: public, or embargoed and past the date."""
    return (
        f"(NOT {t}export_control AND ({t}access = 'public'"
        f" OR ({t}access = 'embargoed' AND {t}embargo_until <= now())))"
    )


def writer(t: str = "") -> str:
    return f"({t}owner = current_user::text OR (SELECT matdx_is_admin()))"


def in_tick_scope(t: str = "") -> str:
    """A tick narrows what it sees to its owner's campaigns (matdx.store.store)."""
    return f"((SELECT matdx_tick_owner()) IS NULL OR {t}owner = (SELECT matdx_tick_owner()))"


CAMPAIGN_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION matdx_campaign_readable(cid text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM campaigns c WHERE c.id = cid
                   AND ({insider("c.")} OR {outsider_results("c.")}))
$$;

CREATE OR REPLACE FUNCTION matdx_campaign_manageable(cid text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM campaigns c WHERE c.id = cid AND {insider("c.")})
$$;

CREATE OR REPLACE FUNCTION matdx_campaign_writable(cid text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM campaigns c WHERE c.id = cid AND {writer("c.")})
$$;

CREATE OR REPLACE FUNCTION matdx_job_readable(jid text) RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT EXISTS (SELECT 1 FROM jobs j WHERE j.id = jid) $$;

CREATE OR REPLACE FUNCTION matdx_job_manageable(jid text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM jobs j WHERE j.id = jid
                   AND matdx_campaign_manageable(j.campaign_id))
$$;

CREATE OR REPLACE FUNCTION matdx_job_writable(jid text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM jobs j WHERE j.id = jid
                   AND matdx_campaign_writable(j.campaign_id))
$$;

CREATE OR REPLACE FUNCTION matdx_record_readable(rid text) RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT EXISTS (SELECT 1 FROM records r WHERE r.record_id = rid) $$;

CREATE OR REPLACE FUNCTION matdx_record_writable(rid text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM records r WHERE r.record_id = rid AND {writer("r.")})
$$;
"""

# table: [(policy name, command, USING, WITH CHECK)]
POLICIES: dict[str, list[tuple[str, str, str | None, str | None]]] = {
    "records": [
        ("read", "SELECT", f"{insider()} OR {outsider_results()}", None),
        ("insert", "INSERT", None, writer()),
        ("change", "UPDATE", writer(), writer()),
        ("delete", "DELETE", "(SELECT matdx_is_admin())", None),
    ],
    "campaigns": [
        ("read", "SELECT", f"({insider()} OR {outsider_read()}) AND {in_tick_scope()}", None),
        ("insert", "INSERT", None, writer()),
        ("change", "UPDATE", writer(), writer()),
        ("delete", "DELETE", writer(), None),
    ],
    "batches": [
        ("own", "ALL", f"{writer()} AND {in_tick_scope()}", writer()),
    ],
    "audit_log": [
        (
            "read",
            "SELECT",
            "actor = current_user::text OR db_role = current_user::text"
            " OR (SELECT matdx_is_admin())"
            " OR (record_id IS NOT NULL AND matdx_record_writable(record_id))"
            " OR (campaign_id IS NOT NULL AND matdx_campaign_writable(campaign_id))",
            None,
        ),
        ("insert", "INSERT", None, "actor = current_user::text OR (SELECT matdx_is_admin())"),
    ],
    "write_log": [
        (
            "read",
            "SELECT",
            "db_role = current_user::text OR (SELECT matdx_is_admin())"
            " OR (table_name = 'records' AND matdx_record_writable(row_id))"
            " OR (table_name = 'campaigns' AND matdx_campaign_writable(row_id))",
            None,
        ),
    ],
    "artifacts": [
        # Content-addressed: a hash, a size and a media type tell only someone who already
        # has the bytes that they exist. Which record has an artifact is record_artifacts.
        ("read", "SELECT", "true", None),
        ("insert", "INSERT", None, "true"),
        ("delete", "DELETE", "(SELECT matdx_is_admin())", None),
    ],
}
for _table in ("workflows", "jobs"):
    POLICIES[_table] = [
        ("read", "SELECT", "matdx_campaign_readable(campaign_id)", None),
        ("insert", "INSERT", None, "matdx_campaign_writable(campaign_id)"),
        (
            "change",
            "UPDATE",
            "matdx_campaign_manageable(campaign_id)",
            "matdx_campaign_manageable(campaign_id)",
        ),
        ("delete", "DELETE", "matdx_campaign_manageable(campaign_id)", None),
    ]
for _table, _key in (("job_edges", "child_id"), ("attempts", "job_id")):
    POLICIES[_table] = [
        ("read", "SELECT", f"matdx_job_readable({_key})", None),
        ("insert", "INSERT", None, f"matdx_job_writable({_key})"),
        ("change", "UPDATE", f"matdx_job_manageable({_key})", f"matdx_job_manageable({_key})"),
        ("delete", "DELETE", f"matdx_job_manageable({_key})", None),
    ]
for _table, _key in (
    ("record_elements", "record_id"),
    ("record_tags", "record_id"),
    ("record_properties", "record_id"),
    ("record_artifacts", "record_id"),
    ("provenance", "child_id"),
):
    POLICIES[_table] = [
        ("read", "SELECT", f"matdx_record_readable({_key})", None),
        ("insert", "INSERT", None, f"matdx_record_writable({_key})"),
        ("delete", "DELETE", "(SELECT matdx_is_admin())", None),
    ]

READ_ONLY = ("alembic_version",)
USER_GRANTS = {
    "records": "SELECT, INSERT, UPDATE",
    "campaigns": "SELECT, INSERT, UPDATE, DELETE",
    "workflows": "SELECT, INSERT, UPDATE, DELETE",
    "jobs": "SELECT, INSERT, UPDATE, DELETE",
    "job_edges": "SELECT, INSERT, UPDATE, DELETE",
    "attempts": "SELECT, INSERT, UPDATE, DELETE",
    "batches": "SELECT, INSERT, UPDATE, DELETE",
    "record_elements": "SELECT, INSERT",
    "record_tags": "SELECT, INSERT",
    "record_properties": "SELECT, INSERT",
    "record_artifacts": "SELECT, INSERT",
    "provenance": "SELECT, INSERT",
    "artifacts": "SELECT, INSERT",
    "audit_log": "SELECT, INSERT",  # never UPDATE or DELETE: the trail is append-only
}

DISCOVERY_VIEW = f"""
CREATE VIEW record_discovery AS
SELECT record_id, schema_version, chemical_formula_reduced, elements, calculation,
       owner, project, access, embargo_until, created_at,
       (access = 'embargoed' AND embargo_until > now()) AS embargoed
FROM records
WHERE {insider()} OR {outsider_read()}
"""

AUDIT_TRIGGERS = """
CREATE OR REPLACE FUNCTION matdx_stamp_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.db_role := session_user;
    RETURN NEW;
END
$$;
CREATE TRIGGER matdx_stamp_audit BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION matdx_stamp_audit();

CREATE OR REPLACE FUNCTION matdx_stamp_batch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.owner := current_user;
    RETURN NEW;
END
$$;
CREATE TRIGGER matdx_stamp_batch BEFORE INSERT ON batches
    FOR EACH ROW EXECUTE FUNCTION matdx_stamp_batch();

CREATE OR REPLACE FUNCTION matdx_governance_json(owner text, project text, access text,
    embargo_until timestamptz, license text, export_control boolean) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('owner', owner, 'project', project, 'access', access,
        'embargo_until', embargo_until, 'license', license, 'export_control', export_control)
$$;

CREATE OR REPLACE FUNCTION matdx_log_record_inserts() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO write_log (at, db_role, operation, table_name, row_id, before, after)
    SELECT now(), session_user, 'INSERT', 'records', n.record_id, '{}'::jsonb,
           matdx_governance_json(n.owner, n.project, n.access, n.embargo_until, n.license,
                                 n.export_control)
    FROM new_rows n;
    RETURN NULL;
END
$$;
CREATE TRIGGER matdx_log_record_inserts AFTER INSERT ON records
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION matdx_log_record_inserts();

CREATE OR REPLACE FUNCTION matdx_log_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    old_governance jsonb := '{}'::jsonb;
    new_governance jsonb := '{}'::jsonb;
    key text;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_governance := matdx_governance_json(OLD.owner, OLD.project, OLD.access,
            OLD.embargo_until, OLD.license, OLD.export_control);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_governance := matdx_governance_json(NEW.owner, NEW.project, NEW.access,
            NEW.embargo_until, NEW.license, NEW.export_control);
    END IF;
    IF TG_OP = 'UPDATE' AND old_governance = new_governance THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'records' THEN
        key := CASE WHEN TG_OP = 'DELETE' THEN OLD.record_id ELSE NEW.record_id END;
    ELSE
        key := CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END;
    END IF;
    INSERT INTO write_log (at, db_role, operation, table_name, row_id, before, after)
    VALUES (now(), session_user, TG_OP, TG_TABLE_NAME, key, old_governance, new_governance);
    RETURN NULL;
END
$$;
CREATE TRIGGER matdx_log_record_changes AFTER UPDATE OR DELETE ON records
    FOR EACH ROW EXECUTE FUNCTION matdx_log_row();
CREATE TRIGGER matdx_log_campaigns AFTER INSERT OR UPDATE OR DELETE ON campaigns
    FOR EACH ROW EXECUTE FUNCTION matdx_log_row();
"""


def _postgresql_upgrade() -> None:
    op.execute(ROLES)
    op.execute(FUNCTIONS)
    op.execute(CAMPAIGN_FUNCTIONS)
    for table, policies in POLICIES.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        for name, command, using, check in policies:
            clauses = (f" USING ({using})" if using else "") + (
                f" WITH CHECK ({check})" if check else ""
            )
            op.execute(f"CREATE POLICY matdx_{name} ON {table} FOR {command}{clauses}")
    # API tokens: no policy, no grant; only the store's owner (the web service) reads them.
    op.execute("ALTER TABLE api_tokens ENABLE ROW LEVEL SECURITY")
    for table, privileges in USER_GRANTS.items():
        op.execute(f"GRANT SELECT ON {table} TO matdx_readers")
        op.execute(f"GRANT {privileges} ON {table} TO matdx_users")
        op.execute(f"GRANT ALL ON {table} TO matdx_admin")
    op.execute("REVOKE UPDATE, DELETE ON audit_log FROM matdx_admin")
    # The database's trail: written by its triggers only, read under its policy.
    op.execute("GRANT SELECT ON write_log TO matdx_readers")
    for table in READ_ONLY:
        op.execute(f"GRANT SELECT ON {table} TO matdx_readers")
    op.execute(
        "DO $$ BEGIN EXECUTE format('GRANT USAGE ON SEQUENCE %s TO matdx_users', "
        "pg_get_serial_sequence('audit_log', 'id')); END $$"
    )
    op.execute(DISCOVERY_VIEW)
    op.execute("GRANT SELECT ON record_discovery TO matdx_readers")
    op.execute(AUDIT_TRIGGERS)


def upgrade() -> None:
    op.create_table(
        "write_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("db_role", sa.String(length=100), nullable=False),
        sa.Column("operation", sa.String(length=10), nullable=False),
        sa.Column("table_name", sa.String(length=40), nullable=False),
        sa.Column("row_id", sa.String(length=36), nullable=False),
        sa.Column("before", JSON_DOCUMENT, nullable=False),
        sa.Column("after", JSON_DOCUMENT, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_write_log")),
    )
    op.create_index("ix_write_log_row", "write_log", ["table_name", "row_id"], unique=False)
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=100), nullable=True))
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("db_role", sa.String(length=100), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_upgrade()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER matdx_log_campaigns ON campaigns")
        op.execute("DROP TRIGGER matdx_log_record_changes ON records")
        op.execute("DROP TRIGGER matdx_log_record_inserts ON records")
        op.execute("DROP TRIGGER matdx_stamp_audit ON audit_log")
        op.execute("DROP TRIGGER matdx_stamp_batch ON batches")
        op.execute("DROP VIEW record_discovery")
        for table, policies in POLICIES.items():
            for name, _command, _using, _check in policies:
                op.execute(f"DROP POLICY matdx_{name} ON {table}")
            op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE api_tokens DISABLE ROW LEVEL SECURITY")
        for table in (*USER_GRANTS, *READ_ONLY):
            op.execute(f"REVOKE ALL ON {table} FROM matdx_readers, matdx_users, matdx_admin")
        for function in (
            "matdx_log_row()",
            "matdx_log_record_inserts()",
            "matdx_governance_json(text, text, text, timestamptz, text, boolean)",
            "matdx_stamp_audit()",
            "matdx_stamp_batch()",
            "matdx_record_writable(text)",
            "matdx_record_readable(text)",
            "matdx_job_writable(text)",
            "matdx_job_manageable(text)",
            "matdx_job_readable(text)",
            "matdx_campaign_writable(text)",
            "matdx_campaign_manageable(text)",
            "matdx_campaign_readable(text)",
            "matdx_tick_owner()",
            "matdx_projects()",
            "matdx_is_admin()",
        ):
            op.execute(f"DROP FUNCTION {function}")
    op.drop_table("write_log")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("db_role")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("owner")
