"""Dependencies of the routes: the store, a read transaction and the requester.

Routes take them as Annotated aliases (``SessionDep``, ``RequesterDep``), so that no route
opens a session or reads a token itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from matdx.api.acting_role import token_requester, transaction_as
from matdx.api.settings import ServiceSettings
from matdx.store.access import Requester
from matdx.store.identity import SHARING, os_account
from matdx.store.store import Store
from matdx.store.tokens import TokenError, authenticate

__all__ = ["RequesterDep", "SessionDep", "SettingsDep", "StoreDep", "requester_of"]


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]


def requester_of(request: Request) -> Requester:
    """The identity a request's ``Authorization: Bearer <token>`` proves; anonymous without
    the header.

    Raises
    ------
    HTTPException
        401 for a malformed, unknown, revoked or expired token, or another scheme.
    """
    cached = getattr(request.state, "requester", None)
    if cached is not None:
        return cached
    header = request.headers.get("authorization")
    if header is None:
        requester = Requester.anonymous()
    else:
        scheme, _, text = header.partition(" ")
        if scheme.lower() != "bearer" or not text.strip():
            raise HTTPException(
                401,
                "Authorization: expected 'Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        store: Store = request.app.state.store
        try:
            with store.transaction() as session:
                claimed = authenticate(session, text.strip())
                requester = token_requester(session, claimed)
        except TokenError as refused:
            raise HTTPException(
                401, str(refused), headers={"WWW-Authenticate": "Bearer"}
            ) from refused
        if requester is None:
            raise HTTPException(
                401,
                f"a token of {claimed.user!r}: not a person's role this service may act as "
                "(people are added with `matdx users add`; `matdx users service` grants them "
                "to the service's role)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        _check_single_user(store, requester)
    request.state.requester = requester
    return requester


RequesterDep = Annotated[Requester, Depends(requester_of)]


def _check_single_user(store: Store, requester: Requester) -> None:
    """A SQLite store is one OS account's: its service accepts only that account's tokens
    (anonymous readers need none); serving several people needs PostgreSQL."""
    if store.backend != "sqlite":
        return
    owner = os_account()
    if requester.user != owner:
        raise HTTPException(
            401,
            f"a token of {requester.user!r}: this SQLite store serves its OS account {owner!r} "
            f"(and anonymous readers) only; {SHARING}",
            headers={"WWW-Authenticate": "Bearer"},
        )


def read_session(store: StoreDep, requester: RequesterDep) -> Iterator[Session]:
    """A session in one transaction for the request, as ``requester`` (rolled back on error).

    On PostgreSQL the transaction acts as the requester's own database role (``SET LOCAL
    ROLE``, :mod:`matdx.api.acting_role`), so row-level security judges every row it reads.
    """
    with transaction_as(store, requester) as session:
        yield session


SessionDep = Annotated[Session, Depends(read_session)]
