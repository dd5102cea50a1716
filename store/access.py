"""Who may see what: the one access filter that every query, export and API route applies.

Access levels of a record (``governance.access``), from most to least restricted:

==============  ===================================  ======================================
level           the record (metadata)                its artifacts
==============  ===================================  ======================================
``private``     the owner                            the owner
``group``       the owner and members of ``project``  the owner and members of ``project``
``embargoed``   everyone                             owner and project members until
                                                     ``embargo_until``, then everyone
``public``      everyone                             everyone
==============  ===================================  ======================================

``export_control`` overrides the table for everyone but the owner and the project's members:
such a record is invisible to them and never leaves the store, for anyone, through an export
or the public API (:attr:`Purpose.EXPORT`, :attr:`Purpose.EXPORT_ARTIFACTS`).

Identity: a :class:`Requester` is a user name and the groups (projects) the user belongs to.
The CLI and the Python API take them from ``$MATDX_USER`` (default: the login name) and
``$MATDX_GROUPS`` (comma-separated); the web API takes them from its authentication. With
SQLite the filter is a courtesy (whoever can read the file can read everything); with a shared
PostgreSQL store, users reach records only through matdx.
"""

from __future__ import annotations

import enum
import getpass
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, and_, false, or_, select, true
from sqlalchemy.orm import Session

from matdx.store.models import Record, utcnow

__all__ = ["Purpose", "Requester", "access_filter", "allowed"]

USER_VARIABLE = "MATDX_USER"
GROUPS_VARIABLE = "MATDX_GROUPS"


class Purpose(enum.StrEnum):
    """What the requester wants to do with the records."""

    READ = "read"  # see records (queries, show, the API for signed-in users)
    ARTIFACTS = "artifacts"  # fetch the bytes of their artifacts
    EXPORT = "export"  # take records out of the store (exports, the public API)
    EXPORT_ARTIFACTS = "export-artifacts"  # take records and their artifacts out (archives)


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
    requester: Requester, purpose: Purpose = Purpose.READ, *, now: datetime | None = None
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

    Examples
    --------
    >>> select(Record).where(access_filter(Requester("ada", {"alloys"})))  # doctest: +SKIP
    """
    now = now or utcnow()
    not_controlled = Record.export_control.is_(False)
    insiders = []
    if requester.user:
        insiders.append(Record.owner == requester.user)
    if requester.groups:
        insiders.append(
            and_(Record.access != "private", Record.project.in_(sorted(requester.groups)))
        )
    insider: ColumnElement[bool] = true() if requester.admin else or_(false(), *insiders)
    if purpose in (Purpose.READ, Purpose.EXPORT):
        outsider = Record.access.in_(["public", "embargoed"])
    else:
        outsider = or_(
            Record.access == "public",
            and_(Record.access == "embargoed", Record.embargo_until <= now),
        )
    visible = or_(insider, and_(not_controlled, outsider))
    if purpose in (Purpose.EXPORT, Purpose.EXPORT_ARTIFACTS):
        return and_(not_controlled, visible)
    return visible


def allowed(
    session: Session,
    requester: Requester,
    purpose: Purpose,
    record_ids: Iterable[str],
    *,
    now: datetime | None = None,
) -> set[str]:
    """Which of ``record_ids`` ``requester`` may use for ``purpose`` (through
    :func:`access_filter`, so a single record is judged exactly as a query would)."""
    ids = sorted(set(record_ids))
    if not ids:
        return set()
    return set(
        session.scalars(
            select(Record.record_id).where(
                Record.record_id.in_(ids), access_filter(requester, purpose, now=now)
            )
        )
    )
