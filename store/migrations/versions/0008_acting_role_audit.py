"""the audit trail names the person a request acts as, not the service's connection

The triggers of 0006 and 0007 stamp ``audit_log.db_role`` and every ``write_log`` entry with
``session_user``: the role that logged in. The web service logs in as
``matdx_authenticator`` and switches to each request's person with ``SET LOCAL ROLE`` (the
PostgREST pattern), so every write made over HTTP was logged as the service. The triggers now
call ``matdx_acting_role()``: for the service's login role only, the person it switched to
with ``SET ROLE``; for everyone else the login role itself (a person who switches to a
project's group role with ``SET ROLE`` in ``psql`` is still logged as themselves). The
trigger functions run as their owner (SECURITY DEFINER), which changes ``current_user`` but
not the session's ``role`` setting, so the person is read from that setting.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 01:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTING_ROLE = """
CREATE OR REPLACE FUNCTION matdx_acting_role() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN session_user::text = 'matdx_authenticator'
                     AND current_setting('role') NOT IN ('none', '')
                THEN current_setting('role') ELSE session_user::text END
$$
"""

# The trigger functions that stamp the authenticated role (0006: audit stamp, record inserts,
# governance changes; 0007: job states).
STAMPING = (
    "matdx_stamp_audit",
    "matdx_log_record_inserts",
    "matdx_log_row",
    "matdx_log_job_states",
)


def _rewrite(old: str, new: str) -> None:
    """Redefine each stamping function with ``old`` replaced by ``new`` in its definition."""
    bind = op.get_bind()
    for name in STAMPING:
        definition = bind.scalar(
            sa.text("SELECT pg_get_functiondef(CAST(:name AS regproc))"), {"name": name}
        )
        op.execute(definition.replace(old, new))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(ACTING_ROLE)
    _rewrite("session_user", "matdx_acting_role()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _rewrite("matdx_acting_role()", "session_user")
    op.execute("DROP FUNCTION matdx_acting_role()")
