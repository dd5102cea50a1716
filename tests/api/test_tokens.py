"""API tokens: hashed at rest, compared in constant time, expiring, revocable; the service
maps them to identities and refuses bad ones with 401."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select

from matdx.store.access import Requester
from matdx.store.models import utcnow
from matdx.store.tokens import (
    ApiToken,
    TokenError,
    authenticate,
    issue_token,
    list_tokens,
    revoke_token,
)
from tests.conftest import matdx_cli


def test_a_token_proves_its_user_and_only_its_hash_is_stored(store):
    alice = Requester("alice", frozenset({"A"}))
    with store.transaction() as session:
        issued = issue_token(session, alice, name="laptop")
    secret = issued.text[17:]  # mdx_<12 hex id>_<secret>
    with store.transaction() as session:
        row = session.scalars(select(ApiToken)).one()
        assert row.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in repr(row.__dict__)
        assert authenticate(session, issued.text) == alice


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), "not recognised"),
        (lambda t: t.replace("mdx_", "mdx_f", 1)[:-1], "malformed"),
        (lambda t: "mdx_000000000000_" + t[17:], "not recognised"),
        (lambda t: "'; DROP TABLE records; --", "malformed"),
    ],
)
def test_wrong_tokens_are_refused(store, mangle, reason):
    with store.transaction() as session:
        issued = issue_token(session, Requester("alice"), name="laptop")
    with store.transaction() as session, pytest.raises(TokenError, match=reason):
        authenticate(session, mangle(issued.text))


def test_expired_and_revoked_tokens_are_refused(store):
    alice = Requester("alice")
    with store.transaction() as session:
        old = issue_token(
            session, alice, name="old", lifetime_days=1, now=utcnow() - timedelta(days=2)
        )
        revoked = issue_token(session, alice, name="revoked")
        revoke_token(session, alice, revoked.id)
    with store.transaction() as session:
        with pytest.raises(TokenError, match="expired"):
            authenticate(session, old.text)
        with pytest.raises(TokenError, match="revoked"):
            authenticate(session, revoked.text)


def test_users_list_and_revoke_only_their_own_tokens(store):
    with store.transaction() as session:
        mine = issue_token(session, Requester("alice"), name="mine")
        issue_token(session, Requester("bob"), name="his")
    with store.transaction() as session:
        assert [t["name"] for t in list_tokens(session, Requester("alice"))] == ["mine"]
        with pytest.raises(TokenError, match="no such token"):
            revoke_token(session, Requester("bob"), mine.id)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "a\nb"}, "name"),
        ({"name": "ok", "lifetime_days": 0}, "lifetime"),
        ({"name": "ok", "lifetime_days": 1000}, "lifetime"),
    ],
)
def test_bad_token_requests_write_nothing(store, kwargs, message):
    with store.transaction() as session, pytest.raises(TokenError, match=message):
        issue_token(session, Requester("alice"), **kwargs)
    with store.transaction() as session:
        assert session.scalars(select(ApiToken)).all() == []


def test_the_service_answers_bad_tokens_with_401(store, http):
    with store.transaction() as session:
        issued = issue_token(session, Requester("alice"), name="x")
    ok = http.get("/healthz", headers={"Authorization": f"Bearer {issued.text}"})
    assert ok.status_code == 200 and ok.json()["status"] == "ok"
    for header in (f"Bearer {issued.text}x", "Basic YWxpY2U6c2VjcmV0", "Bearer "):
        answer = http.get("/optimade/v1/structures", headers={"Authorization": header})
        assert answer.status_code == 401, header
        assert answer.json()["errors"][0]["detail"]
    answer = http.get("/optimade/v1/structures")
    assert answer.status_code == 200  # anonymous


def test_tokens_cli_create_list_revoke(home):
    created = matdx_cli("tokens", "create", "--name", "laptop", "--days", "30", check=True)
    text = created.stdout.strip().splitlines()[-1]
    assert text.startswith("mdx_")
    token_id = text[4:16]
    listed = matdx_cli("tokens", "list", check=True)
    assert token_id in listed.stdout and "laptop" in listed.stdout and text not in listed.stdout
    matdx_cli("tokens", "revoke", token_id, check=True)
    again = matdx_cli("tokens", "revoke", token_id)
    assert again.returncode == 2 and "already revoked" in again.stderr


def test_expired_and_revoked_tokens_get_401_over_http(store, http):
    alice = Requester("alice")
    with store.transaction() as session:
        old = issue_token(
            session, alice, name="old", lifetime_days=1, now=utcnow() - timedelta(days=2)
        )
        gone = issue_token(session, alice, name="gone")
        revoke_token(session, alice, gone.id)
    for token, reason in ((old, "expired"), (gone, "revoked")):
        answer = http.get("/records", headers={"Authorization": f"Bearer {token.text}"})
        assert answer.status_code == 401 and reason in answer.json()["detail"]
        assert answer.headers["www-authenticate"] == "Bearer"


def test_a_sqlite_store_serves_its_own_account_and_anonymous_readers_only(http, store):
    from matdx.store.identity import os_account
    from matdx.store.tokens import issue_token

    with store.transaction() as session:
        mine = issue_token(session, Requester(os_account()), name="mine").text
        alices = issue_token(session, Requester("alice", frozenset({"A"})), name="alice").text
    assert http.get("/records", headers={"Authorization": f"Bearer {mine}"}).status_code == 200
    assert http.get("/records").status_code == 200  # anonymous: public records
    answer = http.get("/records", headers={"Authorization": f"Bearer {alices}"})
    if store.backend == "sqlite":
        assert answer.status_code == 401
        assert "serves its OS account" in answer.json()["detail"]
        assert "PostgreSQL" in answer.json()["detail"]
    else:  # the store for several people
        assert answer.status_code == 200
