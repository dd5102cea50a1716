"""Dependencies of the routes: the store, a read transaction and the requester.

Routes take them as Annotated aliases (``SessionDep``, ``RequesterDep``), so that no route
opens a session or reads a token itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from matdx.api.settings import ServiceSettings
from matdx.store.access import Requester
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
                requester = authenticate(session, text.strip())
        except TokenError as refused:
            raise HTTPException(
                401, str(refused), headers={"WWW-Authenticate": "Bearer"}
            ) from refused
    request.state.requester = requester
    return requester


def read_session(store: StoreDep) -> Iterator[Session]:
    """A session in one transaction for the request (rolled back on error)."""
    with store.transaction() as session:
        yield session


RequesterDep = Annotated[Requester, Depends(requester_of)]
SessionDep = Annotated[Session, Depends(read_session)]
