"""Who may see what: the one access filter that every query, export and API route applies.

Access levels of a record (``governance.access``), from most to least restricted:

==============  ===================================  ======================================
level           discovery metadata                   results, output and artifacts
==============  ===================================  ======================================
``private``     the owner                            the owner
``group``       the owner and members of ``project``  the owner and members of ``project``
``embargoed``   everyone                             owner and project members until
                                                     ``embargo_until``, then everyone
``public``      everyone                             everyone
==============  ===================================  ======================================

Discovery metadata (:data:`DISCOVERY_FIELDS`) is what an outsider sees of a record under a
running embargo: formula, elements, calculation type, owner, date and embargo end; nothing of
its results, its output, its method's parameters or its artifacts (:func:`discovery_view`).
Result filters (property ranges) only match records whose results the requester may read.

``export_control`` overrides the table for everyone but the owner and the project's members:
such a record is invisible to them and never leaves the store, for anyone, through an export
or the public API (:attr:`Purpose.EXPORT`, :attr:`Purpose.EXPORT_ARTIFACTS`). A result under
export control is never reused by a campaign outside that boundary.

Identity: a :class:`Requester` is a user name and the groups (projects) the user belongs to.
On SQLite (the single-user embedded store) the user is the operating-system account that runs
matdx (:mod:`matdx.store.identity`); the web API takes it from its authentication.
"""

from __future__ import annotations

import enum
import getpass
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_, select, true
from sqlalchemy.orm import Session

from matdx.store.models import Campaign, Record, utcnow

__all__ = [
    "DISCOVERY_FIELDS",
    "Purpose",
    "Requester",
    "access_filter",
    "allowed",
    "discovery_view",
]

USER_VARIABLE = "MATDX_USER"
GROUPS_VARIABLE = "MATDX_GROUPS"


class Purpose(enum.StrEnum):
    """What the requester wants to do with the records."""

    READ = "read"  # discover records: their discovery metadata (queries, show, the API)
    RESULTS = "results"  # read their results and outputs (show, reuse, references)
    ARTIFACTS = "artifacts"  # fetch the bytes of their artifacts
    EXPORT = "export"  # take records out of the store (exports, the public API)
    EXPORT_ARTIFACTS = "export-artifacts"  # take records and their artifacts out (archives)
    MANAGE = "manage"  # cancel or rerun a campaign's jobs: the owner and the project only


@dataclass(frozen=True)
class Requester:
    """Who asks: a user name (None: anonymous) and the groups (projects) the user is in.

    ``admin`` sees every record (store maintenance); export control still applies to exports.
    """

    user: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)
    admin: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", frozenset(g for g in self.groups if g))

    @classmethod
    def anonymous(cls) -> Requester:
        return cls()

    @classmethod
    def from_environment(
        cls, user: str | None = None, groups: Iterable[str] | None = None
    ) -> Requester:
        """``user`` or ``$MATDX_USER`` or the login name; ``groups`` or ``$MATDX_GROUPS``."""
        name = user or os.environ.get(USER_VARIABLE) or getpass.getuser()
        if groups is None:
            groups = (g.strip() for g in os.environ.get(GROUPS_VARIABLE, "").split(","))
        return cls(user=name, groups=frozenset(groups))

    @property
    def name(self) -> str:
        """The user name for audit entries."""
        return self.user or "anonymous"


def access_filter(
    requester: Requester,
    purpose: Purpose = Purpose.READ,
    *,
    now: datetime | None = None,
    table: type[Record] | type[Campaign] = Record,
) -> ColumnElement[bool]:
    """The condition on :class:`~matdx.store.models.Record` rows that ``requester`` may use
    for ``purpose`` (see the module docstring for the rules).

    Parameters
    ----------
    requester
        Who asks.
    purpose
        What for.
    now
        The time embargoes are compared with (UTC); defaults to the current time.
    table
        :class:`~matdx.store.models.Campaign` to judge campaigns (their jobs, outputs and
        run directories) by their governance defaults, with the same rules.

    Examples
    --------
    >>> select(Record).where(access_filter(Requester("ada", {"alloys"})))  # doctest: +SKIP
    """
    now = now or utcnow()
    not_controlled = table.export_control.is_(False)
    insiders = []
    if requester.user:
        insiders.append(table.owner == requester.user)
    if requester.groups:
        insiders.append(
            and_(table.access != "private", table.project.in_(sorted(requester.groups)))
        )
    insider: ColumnElement[bool] = true() if requester.admin else or_(false(), *insiders)
    if purpose == Purpose.MANAGE:
        return insider
    if purpose == Purpose.READ:
        outsider = table.access.in_(["public", "embargoed"])
    else:
        outsider = or_(
            table.access == "public",
            and_(table.access == "embargoed", table.embargo_until <= now),
        )
    visible = or_(insider, and_(not_controlled, outsider))
    if purpose in (Purpose.EXPORT, Purpose.EXPORT_ARTIFACTS):
        return and_(not_controlled, visible)
    return visible


def allowed(
    session: Session,
    requester: Requester,
    purpose: Purpose,
    ids: Iterable[str],
    *,
    now: datetime | None = None,
    table: type[Record] | type[Campaign] = Record,
) -> set[str]:
    """Which of the records ``ids`` (or campaigns, with ``table=Campaign``) ``requester`` may
    use for ``purpose``, through :func:`access_filter`, so that one row is judged exactly as a
    query would judge it."""
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    key = Record.record_id if table is Record else Campaign.id
    condition = access_filter(requester, purpose, now=now, table=table)
    return set(session.scalars(select(key).where(key.in_(wanted), condition)))


#: What an outsider sees of a record whose results are embargoed: (section, field) pairs.
DISCOVERY_FIELDS: tuple[tuple[str, str], ...] = (
    ("", "record_id"),
    ("", "schema_version"),
    ("system", "chemical_formula_reduced"),
    ("system", "elements"),
    ("system", "nelements"),
    ("method", "calculation"),
    ("governance", "owner"),
    ("governance", "project"),
    ("governance", "access"),
    ("governance", "embargo_until"),
)


def discovery_view(document: dict[str, Any], created_at: datetime | None = None) -> dict[str, Any]:
    """The discovery metadata of a record document (:data:`DISCOVERY_FIELDS`): what an
    outsider sees of a record under a running embargo; ``created_at`` (the record's date,
    UTC) is added when given."""
    view: dict[str, Any] = {"embargoed": True}
    if created_at is not None:
        view["created_at"] = created_at.isoformat()
    for section, name in DISCOVERY_FIELDS:
        source = document if not section else (document.get(section) or {})
        if name in source:
            if section:
                view.setdefault(section, {})[name] = source[name]
            else:
                view[name] = source[name]
    return view
