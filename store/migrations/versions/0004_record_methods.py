"""method columns; derived records inherit their parents' method

Records gain the ``functional`` and ``potential`` columns (indexed, for queries). Derived
records (EOS, elastic and phonon fits, MD analyses) written before schema v3 name no code:
they gain the method their parent calculations share (code and version, functional,
potential, pseudopotentials, protocol, basis), with their own ``calculation`` and settings
kept. A derived record whose parents disagree, or have no method, is left as it was. Only the
``method`` section of those documents changes; ``schema_version`` stays, and reading brings the
document to v3 as for any stored record. Nothing is deleted.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-07 17:00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
BATCH = 2000
DERIVED = ("eos-fit", "elastic-fit", "phonon", "md-analysis")
INHERITED = ("code", "code_version", "functional", "pseudopotentials", "basis", "kpoints",
             "smearing", "spin")


def _potential(method: dict[str, Any]) -> str | None:
    """The potential a method names (matdx.store.records.potential_of at v3)."""
    if method.get("potential"):
        return str(method["potential"])
    files = [str(p.get("name")) for p in method.get("pseudopotentials") or []
             if p.get("element") is None and p.get("name")]
    if not files:
        return None
    style = (method.get("parameters") or {}).get("pair_style")
    return f"{style}: {', '.join(files)}" if style else ", ".join(files)


def _protocol(method: dict[str, Any]) -> str | None:
    return method.get("protocol") or (method.get("parameters") or {}).get("protocol")


def _identity(method: dict[str, Any]) -> tuple[Any, ...]:
    """matdx.store.records.method_identity at v3, as a comparable tuple."""
    return (
        method.get("code"), method.get("code_version"), method.get("functional"),
        _potential(method),
        tuple(sorted((str(p.get("element")), str(p.get("name")), str(p.get("sha256")))
                     for p in method.get("pseudopotentials") or [])),
        _protocol(method), repr(sorted((method.get("basis") or {}).items())),
    )


def _inherited(method: dict[str, Any], parents: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The derived record's method with its parents' shared method, or None if they do not
    share one."""
    methods = [p for p in parents if p.get("code")]
    if not methods or len({_identity(m) for m in methods}) != 1:
        return None
    base = methods[0]
    new = {key: base[key] for key in INHERITED if base.get(key) is not None}
    new.update(
        calculation=method.get("calculation"),
        potential=_potential(base),
        protocol=_protocol(base),
        parameters={**(method.get("parameters") or {}),
                    "input_parameters": base.get("parameters") or {}},
    )
    return {**method, **new}


def _records() -> sa.TableClause:
    return sa.table(
        "records",
        sa.column("record_id", sa.String),
        sa.column("code", sa.String),
        sa.column("functional", sa.String),
        sa.column("potential", sa.String),
        sa.column("document", JSON_DOCUMENT),
    )


def _methods(bind: Any, records: sa.TableClause, ids: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 500):
        for record_id, document in bind.execute(
            sa.select(records.c.record_id, records.c.document).where(
                records.c.record_id.in_(ids[start:start + 500]))
        ):
            found[record_id] = (document or {}).get("method") or {}
    return found


def _backfill() -> None:
    bind = op.get_bind()
    records = _records()
    update = (
        records.update()
        .where(records.c.record_id == sa.bindparam("key"))
        .values(code=sa.bindparam("new_code"), functional=sa.bindparam("new_functional"),
                potential=sa.bindparam("new_potential"))
    )
    rewrite = (
        records.update()
        .where(records.c.record_id == sa.bindparam("key"))
        .values(document=sa.bindparam("new_document"))
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
        derived = [(record_id, document) for record_id, document in rows
                   if (document.get("method") or {}).get("calculation") in DERIVED
                   and not (document.get("method") or {}).get("code")
                   and document.get("parents")]
        parents = _methods(bind, records, sorted({p for _, d in derived for p in d["parents"]}))
        rewritten = []
        for record_id, document in derived:
            method = _inherited(document["method"],
                                [parents[p] for p in document["parents"] if p in parents])
            if method is not None:
                document = {**document, "method": method}
                rewritten.append({"key": record_id, "new_document": document})
        if rewritten:
            bind.execute(rewrite, rewritten)
        methods = {row["key"]: row["new_document"]["method"] for row in rewritten}
        bind.execute(update, [
            {"key": record_id,
             "new_code": methods.get(record_id, document.get("method") or {}).get("code"),
             "new_functional": (methods.get(record_id, document.get("method") or {})
                                .get("functional") or None),
             "new_potential": _potential(methods.get(record_id, document.get("method") or {}))}
            for record_id, document in rows
        ])
        last = rows[-1][0]


def upgrade() -> None:
    # Added in place (no table rebuild): queries reach them through their indexes.
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("functional", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("potential", sa.String(length=400), nullable=True))
        batch_op.create_index("ix_records_functional", ["functional"], unique=False)
        batch_op.create_index("ix_records_potential", ["potential"], unique=False)
    _backfill()


def downgrade() -> None:
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.drop_index("ix_records_potential")
        batch_op.drop_index("ix_records_functional")
        batch_op.drop_column("potential")
        batch_op.drop_column("functional")
