"""Each request acts as its own database role (PostgreSQL): the service connects as the
authenticator, which reads nothing itself, and row-level security, not the Python access
filter, keeps a person's rows from the others."""

from __future__ import annotations

import uuid

import pytest
from ase.build import bulk
from sqlalchemy import text, true
from sqlalchemy.exc import ProgrammingError

from matdx.store.access import Requester
from matdx.store.roles import ANONYMOUS_ROLE, AUTHENTICATOR_ROLE, add_user
from matdx.store.search import RecordQuery, search_records
from tests.store.factory import document, insert_documents

pytestmark = pytest.mark.postgres


def _alice_records(store) -> dict[str, str]:
    ids = {}
    for access, element in (("private", "Fe"), ("group", "Cu"), ("public", "Al")):
        made = document(bulk(element, "fcc", a=3.9), owner="alice", project="A", access=access)
        insert_documents(store, made)
        ids[access] = made["record_id"]
    return ids


def test_bob_gets_no_private_row_when_the_python_filter_is_bypassed(
    http, store, service_store, token_of, monkeypatch
):
    ids = _alice_records(store)
    bob = token_of("bob", {"B"})
    # The Python side lets everything through: every access condition is TRUE, every id
    # allowed.
    monkeypatch.setattr("matdx.store.search.access_filter", lambda *a, **k: true())
    monkeypatch.setattr("matdx.api.records.allowed", lambda session, r, p, wanted, **k: set(wanted))
    # The bypass is real: the store's owner, whom row-level security does not judge, now
    # finds alice's private record for bob.
    with store.transaction() as session:
        leaked = search_records(session, RecordQuery.parse(limit=100), Requester("bob", {"B"}))
    assert ids["private"] in {item["record_id"] for item in leaked.items}

    listed = http.get("/records?limit=100", headers=bob)
    assert listed.status_code == 200, listed.text
    assert {item["record_id"] for item in listed.json()["items"]} == {ids["public"]}
    for level in ("private", "group"):
        assert http.get(f"/records/{ids[level]}", headers=bob).status_code == 404
        assert http.get(f"/records/{ids[level]}").status_code == 404  # anonymous
    alice = token_of("alice", {"A"})
    mine = http.get("/records?limit=100", headers=alice).json()["items"]
    assert {item["record_id"] for item in mine} == set(ids.values())


def test_the_service_connects_as_the_authenticator_which_reads_nothing_itself(
    http, service_store, token_of
):
    with service_store.engine.connect() as connection:
        assert connection.scalar(text("SELECT current_user")) == AUTHENTICATOR_ROLE
        with pytest.raises(ProgrammingError, match="permission denied for table records"):
            connection.execute(text("SELECT count(*) FROM records"))
    # Each request's transaction runs as the token's role or the anonymous reader.
    with service_store.transaction() as session:
        from matdx.api.acting_role import switch_role

        switch_role(session, ANONYMOUS_ROLE)
        assert session.scalar(text("SELECT current_user")) == ANONYMOUS_ROLE
        assert session.scalar(text("SELECT session_user")) == AUTHENTICATOR_ROLE
    with service_store.transaction() as session:  # SET LOCAL ended with the transaction
        assert session.scalar(text("SELECT current_user")) == AUTHENTICATOR_ROLE


def test_a_token_of_a_role_that_is_no_person_is_refused(http, store):
    """A token naming the store's owner (a superuser), a group role, the authenticator or a
    person not granted to it proves nobody the service may act as."""
    from matdx.store.identity import connected_role
    from matdx.store.tokens import issue_token

    owner = connected_role(store.engine).name
    # A person whose role was never granted to the service's role (made by hand).
    stranger = f"u_{uuid.uuid4().hex[:8]}"
    add_user(store.engine, stranger)
    with store.engine.begin() as connection:
        connection.execute(text(f"REVOKE {stranger} FROM {AUTHENTICATOR_ROLE}"))
    for name in (owner, "matdx_admin", AUTHENTICATOR_ROLE, stranger):
        with store.transaction() as session:
            issued = issue_token(session, Requester(name), name=f"test {name}")
        answer = http.get("/records", headers={"Authorization": f"Bearer {issued.text}"})
        assert answer.status_code == 401, (name, answer.text)
        assert "not a person's role" in answer.json()["detail"]


def test_matdx_users_service_is_idempotent(store):
    from tests.conftest import matdx_cli

    for _ in range(2):
        made = matdx_cli("users", "service")
        assert made.returncode == 0, made.stderr
        assert f"connect `matdx serve` as {AUTHENTICATOR_ROLE}" in made.stdout
    with store.engine.connect() as connection:
        attributes = connection.execute(
            text(
                "SELECT rolcanlogin, rolinherit, rolbypassrls, rolsuper FROM pg_roles"
                " WHERE rolname = :name"
            ),
            {"name": AUTHENTICATOR_ROLE},
        ).one()
    assert tuple(attributes) == (True, False, True, False)


def test_an_outsider_lists_an_embargoed_record_once_with_its_discovery_metadata_only(
    http, store, service_store, token_of
):
    """The store's search adds the rows of ``record_discovery`` for a role that row-level
    security judges; the service must not add them a second time."""
    from datetime import UTC, datetime, timedelta

    made = document(
        bulk("Ni", "fcc", a=3.5),
        energy=-4.2,
        owner="alice",
        project="A",
        access="embargoed",
        embargo_until=datetime.now(UTC) + timedelta(days=30),
    )
    insert_documents(store, made)
    for headers in (token_of("bob", {"B"}), {}):  # another project's person, anonymous
        listed = http.get("/records?elements=Ni&count=true", headers=headers)
        assert listed.status_code == 200, listed.text
        answer = listed.json()
        assert [item["record_id"] for item in answer["items"]] == [made["record_id"]]
        assert answer["count"] == 1
        assert answer["items"][0]["energy_per_atom"] is None
        resolved = http.get(f"/records/resolve/{made['record_id'][:8]}", headers=headers)
        assert resolved.json() == {"record_id": made["record_id"]}, resolved.text
        one = http.get(f"/records/{made['record_id']}", headers=headers).json()
        assert one["system"]["chemical_formula_reduced"] == "Ni"
        assert "results" not in one and "output" not in one


def test_writes_over_http_are_logged_as_the_person_not_the_service(http, store, token_of):
    """The service logs in as the authenticator; the audit trail names the request's person
    (migration 0008), for a campaign submitted over HTTP and for its cancellation."""
    from tests.api.test_rest import CAMPAIGN

    alice = token_of("alice", {"A"})
    submitted = http.post("/campaigns", content=CAMPAIGN, headers=alice)
    assert submitted.status_code == 201, submitted.text
    campaign_id = submitted.json()["id"]
    assert http.post(f"/campaigns/{campaign_id}/cancel", headers=alice).status_code == 200
    with store.engine.connect() as connection:
        logged = connection.execute(
            text(
                "SELECT DISTINCT db_role, table_name FROM write_log"
                " WHERE row_id = :id OR after->>'campaign_id' = :id"
            ),
            {"id": campaign_id},
        ).all()
        stamped = connection.scalar(
            text("SELECT count(*) FROM audit_log WHERE db_role = :role"),
            {"role": AUTHENTICATOR_ROLE},
        )
    assert {table for _, table in logged} == {"campaigns", "jobs"}
    assert {role for role, _ in logged} == {"alice"}
    assert stamped == 0
