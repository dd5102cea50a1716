"""Changing who owns and who may see records, with an audit entry for every change.

Records are immutable except for their governance section (owner, project, access, embargo,
licence, export control). A change rewrites that section of the document (upgrading an older
document to the current schema, since every write is validated against it), the columns that
copy it, and adds one :class:`~matdx.store.models.AuditEntry` per record or campaign with the
values before and after. Changing a campaign changes the defaults its future records get and
every record it has already.

Only a record's (or campaign's) owner, or an administrator, may change it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from matdx.store.access import Requester
from matdx.store.indexing import record_columns
from matdx.store.models import AuditEntry, Campaign, Record
from matdx.store.records import (
    Access,
    Governance,
    RecordSchemaError,
    upgrade_document,
    validate_document,
)

__all__ = ["GovernanceChange", "NotOwner", "set_governance"]

FIELDS = ("owner", "project", "access", "embargo_until", "license", "export_control")


class NotOwner(PermissionError):
    """The requester does not own something they asked to change."""


class GovernanceChange(BaseModel):
    """The governance fields to change; fields left out stay as they are. Setting an access
    level other than ``embargoed`` clears ``embargo_until``; ``license=None`` removes the
    licence."""

    model_config = ConfigDict(extra="forbid")

    owner: str | None = None
    project: str | None = None
    access: Access | None = None
    embargo_until: datetime | None = None
    license: str | None = None
    export_control: bool | None = None

    def apply(self, governance: dict[str, Any]) -> dict[str, Any]:
        """The governance section after the change (validated: raises ``ValueError``)."""
        given = self.model_dump(include=self.model_fields_set)
        merged = {**governance, **given}
        if merged.get("access") != "embargoed" and "embargo_until" not in given:
            merged["embargo_until"] = None
        try:
            return Governance.model_validate(merged).model_dump(mode="json")
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, p['loc'])) or 'governance'}: {p['msg']}" for p in err.errors()
            )
            raise RecordSchemaError(problems) from err


def _check_owner(requester: Requester, owners: dict[str, str], what: str) -> None:
    if requester.admin:
        return
    foreign = sorted(key for key, owner in owners.items() if owner != requester.user)
    if foreign:
        shown = ", ".join(f"{key[:12]} (owner {owners[key] or 'none'!r})" for key in foreign[:5])
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise NotOwner(
            f"{requester.name} may only change {what} they own: {shown}{more}; nothing changed"
        )


def _governance_of(campaign: Campaign) -> dict[str, Any]:
    return {
        "owner": campaign.owner,
        "project": campaign.project,
        "access": campaign.access,
        "embargo_until": campaign.embargo_until.isoformat() if campaign.embargo_until else None,
        "license": campaign.license or None,
        "export_control": campaign.export_control,
    }


def set_governance(
    session: Session,
    requester: Requester,
    change: GovernanceChange,
    *,
    record_ids: Iterable[str] = (),
    campaign_ids: Iterable[str] = (),
    reason: str = "",
) -> int:
    """Change the governance of records, and of campaigns with all their records.

    Everything is checked before anything is written: ownership of every record and
    campaign, and the validity of every resulting governance section (e.g. ``embargoed``
    without ``embargo_until``). The caller owns the transaction.

    Returns
    -------
    int
        Number of records changed.

    Raises
    ------
    NotOwner
        If the requester (not an administrator) does not own one of them.
    RecordSchemaError
        If a resulting governance section is invalid.
    LookupError
        If a record or campaign id does not exist.
    """
    campaign_ids = sorted(set(campaign_ids))
    campaigns = list(session.scalars(select(Campaign).where(Campaign.id.in_(campaign_ids))))
    missing = set(campaign_ids) - {c.id for c in campaigns}
    if missing:
        raise LookupError(f"no campaign {', '.join(sorted(missing))}")
    ids = set(record_ids)
    if campaign_ids:
        ids |= set(
            session.scalars(select(Record.record_id).where(Record.campaign_id.in_(campaign_ids)))
        )
    rows = session.execute(
        select(Record.record_id, Record.owner, Record.document).where(
            Record.record_id.in_(sorted(ids))
        )
    ).all()
    missing = ids - {row.record_id for row in rows}
    if missing:
        raise LookupError(f"no record {', '.join(sorted(missing))}")
    _check_owner(requester, {c.id: c.owner for c in campaigns}, "campaigns")
    _check_owner(requester, {row.record_id: row.owner for row in rows}, "records")

    new_campaigns = [(campaign, change.apply(_governance_of(campaign))) for campaign in campaigns]
    updates, audits = [], []
    for row in rows:
        document = upgrade_document(row.document)
        before = document.get("governance", {})
        document["governance"] = change.apply(before)
        columns = record_columns(validate_document(document))
        updates.append(
            {key: columns[key] for key in ("record_id", "schema_version", "document", *FIELDS)}
        )
        audits.append(
            {
                "actor": requester.name,
                "action": "set-governance",
                "record_id": row.record_id,
                "before": before,
                "after": document["governance"],
                "reason": reason,
            }
        )
    for campaign, after in new_campaigns:
        audits.append(
            {
                "actor": requester.name,
                "action": "set-campaign-governance",
                "campaign_id": campaign.id,
                "before": _governance_of(campaign),
                "after": after,
                "reason": reason,
            }
        )
        campaign.owner, campaign.project, campaign.access = (
            after["owner"],
            after["project"],
            after["access"],
        )
        campaign.license = after["license"] or ""
        campaign.export_control = after["export_control"]
        campaign.embargo_until = Governance.model_validate(after).embargo_until
    if updates:
        session.execute(update(Record), updates)  # bulk UPDATE by primary key
    for audit in audits:
        session.add(AuditEntry(**audit))
    session.flush()
    return len(updates)
