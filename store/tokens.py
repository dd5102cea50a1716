"""API tokens: bearer secrets that prove a user's identity to the web service.

A token is shown once, when it is created: ``mdx_<id>_<secret>``. The store keeps its id, the
sha256 of the secret (never the secret), the identity it proves (user, groups), an expiry and
a revocation time. Checking a token looks the row up by id and compares the hashes in
constant time (:func:`hmac.compare_digest`), so neither a wrong secret nor a wrong id takes
measurably longer to refuse than the other.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, DateTime, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from matdx.store.access import Requester
from matdx.store.models import Base, JSONDocument, utcnow

__all__ = [
    "MAX_LIFETIME_DAYS",
    "ApiToken",
    "IssuedToken",
    "TokenError",
    "authenticate",
    "issue_token",
    "list_tokens",
    "revoke_token",
]

PREFIX = "mdx"
ID_BYTES = 6  # 12 hex characters: the public part, looked up by index
SECRET_BYTES = 32  # 256 bits of randomness: the part that proves
MAX_LIFETIME_DAYS = 366
TOKEN_PATTERN = re.compile(r"^mdx_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,99}$")


class TokenError(PermissionError):
    """A token is malformed, unknown, revoked or expired (the message says which), or a token
    request is invalid."""


class ApiToken(Base):
    """One API token: who it proves, until when, and the hash of its secret."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    user: Mapped[str] = mapped_column(String(100), index=True)
    groups: Mapped[list[Any]] = mapped_column(JSONDocument, default=list)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class IssuedToken:
    """A token just created: ``text`` is the bearer secret, shown this once."""

    id: str
    text: str
    user: str
    expires_at: datetime


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns: they are UTC."""
    from datetime import UTC

    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def issue_token(
    session: Session,
    requester: Requester,
    *,
    name: str,
    lifetime_days: float = 90.0,
    now: datetime | None = None,
) -> IssuedToken:
    """Create a token proving ``requester`` (user, groups, admin) for ``lifetime_days``.

    Raises
    ------
    TokenError
        If the requester is anonymous, ``name`` is not 1–100 printable characters (letters,
        digits, space, ``._@-``), or the lifetime is not in (0, 366] days.
    """
    if not requester.user:
        raise TokenError("tokens: an anonymous requester cannot hold a token")
    if not NAME_PATTERN.match(name):
        raise TokenError(
            f"tokens: name {name!r} must be 1-100 letters, digits, spaces or ._@- "
            "and start with a letter or digit"
        )
    if not 0 < lifetime_days <= MAX_LIFETIME_DAYS:
        raise TokenError(
            f"tokens: lifetime {lifetime_days} days is outside (0, {MAX_LIFETIME_DAYS}]"
        )
    now = now or utcnow()
    token_id = secrets.token_hex(ID_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    expires = now + timedelta(days=lifetime_days)
    session.add(
        ApiToken(
            id=token_id,
            name=name,
            user=requester.user,
            groups=sorted(requester.groups),
            admin=requester.admin,
            secret_sha256=_digest(secret),
            created_at=now,
            expires_at=expires,
        )
    )
    session.flush()
    return IssuedToken(token_id, f"{PREFIX}_{token_id}_{secret}", requester.user, expires)


def authenticate(session: Session, text: str, *, now: datetime | None = None) -> Requester:
    """The identity a bearer token proves.

    Raises
    ------
    TokenError
        If the token is malformed, unknown, revoked or expired.
    """
    matched = TOKEN_PATTERN.match(text)
    if matched is None:
        raise TokenError("token: malformed (expected mdx_<12 hex>_<43 characters>)")
    token_id, secret = matched.groups()
    row = session.get(ApiToken, token_id)
    # Compare against a dummy digest when the id is unknown, so that both refusals cost the
    # same hashing and comparison.
    stored = row.secret_sha256 if row is not None else "0" * 64
    if not hmac.compare_digest(_digest(secret), stored) or row is None:
        raise TokenError("token: not recognised")
    if row.revoked_at is not None:
        raise TokenError(f"token {token_id}: revoked")
    if _aware(row.expires_at) <= (now or utcnow()):
        raise TokenError(f"token {token_id}: expired at {_aware(row.expires_at).isoformat()}")
    return Requester(user=row.user, groups=frozenset(row.groups or ()), admin=row.admin)


def list_tokens(session: Session, requester: Requester) -> list[dict[str, Any]]:
    """The requester's tokens (every token for an administrator), without secrets."""
    statement = select(ApiToken).order_by(ApiToken.created_at)
    if not requester.admin:
        statement = statement.where(ApiToken.user == (requester.user or ""))
    return [
        {
            "id": row.id,
            "name": row.name,
            "user": row.user,
            "groups": list(row.groups or ()),
            "created_at": _aware(row.created_at),
            "expires_at": _aware(row.expires_at),
            "revoked_at": _aware(row.revoked_at) if row.revoked_at else None,
        }
        for row in session.scalars(statement)
    ]


def revoke_token(
    session: Session, requester: Requester, token_id: str, *, now: datetime | None = None
) -> None:
    """Revoke one of the requester's tokens (any token, for an administrator).

    Raises
    ------
    TokenError
        If no such token belongs to the requester, or it is revoked already.
    """
    row = session.get(ApiToken, token_id)
    if row is None or not (requester.admin or row.user == requester.user):
        raise TokenError(f"token {token_id!r}: no such token of {requester.name}")
    if row.revoked_at is not None:
        raise TokenError(f"token {token_id}: already revoked")
    row.revoked_at = now or utcnow()
