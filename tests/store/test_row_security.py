"""Access enforced by PostgreSQL itself: login roles, projects as group roles, row-level
security (migration 0006), the database's write log and the per-owner tick.

Every person here connects as their own role, ``NOSUPERUSER NOBYPASSRLS`` and owning no
table; the store's owner (the superuser of the test server) made the tables. Each raw-SQL cell
is also run as the owner, to show that the policies, not the data, make the difference.
"""

from __future__ import annotations

import json
import os
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url, select

from matdx.client import Client
from matdx.store.access import Requester
from matdx.store.identity import IdentityError
from matdx.store.models import Campaign, Job, JobState, Record, Workflow
from matdx.store.roles import RoleError, add_member, add_user, list_users
from matdx.store.store import Store
from matdx.workflows import Flow
from matdx.workflows.executors.local import LocalExecutor
from matdx.workflows.submit import CampaignGraph
from tests.conftest import TEMPLATE_DATABASE, matdx_cli
from tests.store.factory import artifact, crystal, document, insert_documents
from tests.workflows import jobs

pytestmark = pytest.mark.postgres

LATER = datetime.now(UTC) + timedelta(days=60)
LEVELS = {
    "private": dict(access="private", project="A"),
    "group": dict(access="group", project="A"),
    "embargoed": dict(access="embargoed", project="A", embargo_until=LATER),
    "public": dict(access="public", license="CC-BY-4.0"),
    "controlled": dict(access="public", project="A", export_control=True),
}
ROLES = ("alice", "carol", "bob", "reader", "dbadmin")
ALL = set(LEVELS)
INSIDE_A = ALL - {"private"}  # what carol, alice's project colleague, reads
OUT = {"public"}
DISCOVER = OUT | {"embargoed"}  # discovery metadata only
EXPORTABLE = ALL - {"controlled"}  # export control: nothing leaves, whoever asks


def role_url(url: str, role: str) -> str:
    return make_url(url).set(username=role).render_as_string(hide_password=False)


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class Shared:
    """The store of the module: alice's records and campaigns at every level."""

    home: Path
    owner_url: str
    records: dict[str, str]  # level -> record id
    artifact_name: str = "out.txt"
    campaigns: dict[str, dict[str, str]] = field(default_factory=dict)  # role -> level -> id

    def url(self, role: str) -> str:
        return role_url(self.owner_url, role)

    def level(self, record_id: str) -> str | None:
        return {v: k for k, v in self.records.items()}.get(record_id)

    def client(self, role: str) -> Client:
        return Client(self.home, self.url(role), executors={"local": LocalExecutor(2)})


def _ensure_roles(store: Store) -> None:
    known = {u.name for u in list_users(store.engine)}
    for name, options in {
        "alice": {},
        "carol": {},
        "bob": {},
        "reader": {"reader": True},
        "dbadmin": {"admin": True},
    }.items():
        if name not in known:
            add_user(store.engine, name, **options)
    add_member(store.engine, "A", "alice")
    add_member(store.engine, "A", "carol")
    add_member(store.engine, "B", "bob")


def _campaign(session, owner: str, level: str) -> str:
    """A campaign of ``owner`` at ``level`` with one READY job (rows written as ``owner``)."""
    campaign_id, workflow_id = str(uuid.uuid4()), str(uuid.uuid4())
    session.add(
        Campaign(
            id=campaign_id,
            name=f"{owner}-{level}-{campaign_id[:6]}",
            spec={},
            executor={"type": "local"},
            owner=owner,
            **LEVELS[level],
        )
    )
    session.flush()
    session.add(Workflow(id=workflow_id, campaign_id=campaign_id, name="w", recipe="test"))
    session.flush()
    session.add(
        Job(
            id=str(uuid.uuid4()),
            campaign_id=campaign_id,
            workflow_id=workflow_id,
            position=0,
            name="j",
            function="tests.workflows.jobs:add",
            inputs={},
            state=JobState.READY,
        )
    )
    return campaign_id


@pytest.fixture(scope="module")
def shared(postgres_server, tmp_path_factory) -> Iterator[Shared]:
    name = f"rls_{uuid.uuid4().hex[:16]}"
    owner_url = postgres_server.create_database(name, template=TEMPLATE_DATABASE)
    home = tmp_path_factory.mktemp("rls-home")
    owner = Store(home, owner_url)
    try:
        _ensure_roles(owner)
        made = Shared(home, owner_url, {})
        alice = Store(home, made.url("alice"))  # alice writes her own rows, as herself
        for i, (level, governance) in enumerate(LEVELS.items()):
            reference = artifact(alice, f"alice's {level} output".encode(), made.artifact_name)
            doc = document(
                crystal("Cu", 3.5 + 0.01 * i),
                owner="alice",
                artifacts=[reference],
                energy=-3.0 - i,
                seed=i,
                **governance,
            )
            made.records[level] = insert_documents(alice, doc)[0]
        # Campaigns to cancel: one set per role, so that each role's attempt is judged alone.
        with alice.transaction() as session:
            for role in ROLES:
                made.campaigns[role] = {
                    level: _campaign(session, "alice", level) for level in LEVELS
                }
        alice.dispose()
        yield made
    finally:
        owner.dispose()
        postgres_server.drop_database(name)


def raw(url: str, statement: str) -> list[tuple]:
    """Rows of ``statement`` run with psycopg (as psql would), connected as the URL's role."""
    with psycopg.connect(libpq(url)) as connection:
        return connection.execute(statement).fetchall()


def test_people_are_plain_roles_that_own_nothing(shared):
    rows = raw(
        shared.owner_url,
        "SELECT rolname, rolsuper, rolbypassrls, rolcreaterole, "
        "(SELECT count(*) FROM pg_tables t WHERE t.tableowner = r.rolname) "
        "FROM pg_roles r WHERE rolname IN ('alice', 'carol', 'bob', 'reader', 'dbadmin') "
        "ORDER BY rolname",
    )
    assert [row[0] for row in rows] == sorted(ROLES)
    assert all(row[1:] == (False, False, False, 0) for row in rows)
    users = {u.name: u for u in list_users(Store(shared.home, shared.owner_url).engine)}
    assert users["alice"].projects == ("A",) and users["bob"].projects == ("B",)
    assert users["reader"].kind == "reader" and users["dbadmin"].admin


def _sql_cells(shared: Shared, role: str) -> dict[str, set[str]]:
    return _sql_cells_of(shared, shared.url(role))


def _sql_cells_of(shared: Shared, url: str) -> dict[str, set[str]]:
    return {
        "S": {shared.level(r) for (r,) in raw(url, "SELECT record_id FROM records")},
        "D": {shared.level(r) for (r,) in raw(url, "SELECT record_id FROM record_discovery")},
        "V": {shared.level(r) for (r,) in raw(url, "SELECT record_id FROM record_properties")},
        "L": {shared.level(r) for (r,) in raw(url, "SELECT record_id FROM record_artifacts")},
    }


def _exported_ids(target: Path, fmt: str) -> set[str]:
    if fmt == "optimade":
        lines = [json.loads(line) for line in target.read_text().splitlines()]
        return {line["id"] for line in lines if "id" in line}  # (not the info line)
    with tarfile.open(target) as archive:
        [member] = [m for m in archive.getmembers() if m.name.endswith("records.jsonl")]
        text = archive.extractfile(member).read().decode()
    return {json.loads(line)["record"]["record_id"] for line in text.splitlines()}


def _api_cells(shared: Shared, role: str, tmp_path: Path) -> dict[str, set[str]]:
    client = shared.client(role)
    owner = Store(shared.home, shared.owner_url)  # to see the jobs' states
    try:
        who = client.identity(admin=role == "dbadmin")
        forged = Requester("alice", frozenset({"A", "B"}), admin=True)  # claims everything
        cells = {
            "P": {shared.level(i["record_id"]) for i in client.query(requester=who).items},
            "F": {shared.level(i["record_id"]) for i in client.query(requester=forged).items},
        }
        for letter, fmt in (("E", "optimade"), ("A", "archive")):
            target = tmp_path / f"{role}-{fmt}"
            client.export(fmt, target, requester=who)
            cells[letter] = {shared.level(i) for i in _exported_ids(target, fmt)} - {None}
        fetched = set()
        for level, record_id in shared.records.items():
            try:
                client.fetch_artifact(
                    record_id, shared.artifact_name, tmp_path / f"{role}-{level}", requester=who
                )
                fetched.add(level)
            except (PermissionError, LookupError):
                pass
        cells["X"] = fetched
        cancelled = set()
        for level, campaign_id in shared.campaigns[role].items():
            try:
                client.cancel([campaign_id], requester=who)
            except (PermissionError, LookupError, psycopg.Error):
                continue
            with owner.transaction() as session:
                states = set(
                    session.scalars(select(Job.state).where(Job.campaign_id == campaign_id))
                )
            if states == {JobState.CANCELLED}:
                cancelled.add(level)
        cells["M"] = cancelled
        rerun = set()
        for level, campaign_id in shared.campaigns[role].items():
            try:
                client.rerun([campaign_id], requester=who)
            except (PermissionError, LookupError, psycopg.Error):
                continue
            with owner.transaction() as session:
                states = set(
                    session.scalars(select(Job.state).where(Job.campaign_id == campaign_id))
                )
            if states == {JobState.WAITING}:  # the cancelled job is back in line
                rerun.add(level)
        cells["R"] = rerun
        return cells
    finally:
        client.store.dispose()
        owner.dispose()


def _cli_cells(shared: Shared, role: str) -> dict[str, set[str]]:
    env = {"MATDX_STORE": shared.url(role), "MATDX_HOME": str(shared.home)}
    env.pop("MATDX_USER", None)
    admin = ["--admin"] if role == "dbadmin" else []
    done = matdx_cli(
        "query", "--format", "json", "--limit", "100", *admin, env={**env, "MATDX_USER": ""}
    )
    assert done.returncode == 0, done.stderr
    return {"C": {shared.level(i["record_id"]) for i in json.loads(done.stdout)["records"]}}


EXPECTED = {
    # raw SQL: records, the discovery view, result values, artifact links
    "S": {"alice": ALL, "carol": INSIDE_A, "bob": OUT, "reader": OUT, "dbadmin": ALL},
    "D": {
        "alice": ALL,
        "carol": INSIDE_A,
        "bob": OUT | {"embargoed"},
        "reader": OUT | {"embargoed"},
        "dbadmin": ALL,
    },
    "V": {"alice": ALL, "carol": INSIDE_A, "bob": OUT, "reader": OUT, "dbadmin": ALL},
    "L": {"alice": ALL, "carol": INSIDE_A, "bob": OUT, "reader": OUT, "dbadmin": ALL},
    # the CLI and the Python API as the role; F: a requester claiming alice, her project and
    # the administrator right, through the role's connection
    # (outsiders list the embargoed record with its discovery metadata, from record_discovery)
    "C": {"alice": ALL, "carol": INSIDE_A, "bob": DISCOVER, "reader": DISCOVER, "dbadmin": ALL},
    "P": {"alice": ALL, "carol": INSIDE_A, "bob": DISCOVER, "reader": DISCOVER, "dbadmin": ALL},
    "F": {"alice": ALL, "carol": INSIDE_A, "bob": DISCOVER, "reader": DISCOVER, "dbadmin": ALL},
    # exports (OPTIMADE JSON Lines; archive with artifacts), artifact fetch, cancel
    "E": {
        "alice": EXPORTABLE,
        "carol": INSIDE_A - {"controlled"},
        "bob": OUT,
        "reader": OUT,
        "dbadmin": EXPORTABLE,
    },
    "A": {
        "alice": EXPORTABLE,
        "carol": INSIDE_A - {"controlled"},
        "bob": OUT,
        "reader": OUT,
        "dbadmin": EXPORTABLE,
    },
    "X": {"alice": ALL, "carol": INSIDE_A, "bob": OUT, "reader": OUT, "dbadmin": ALL},
    # (the public campaign belongs to no project: carol may not manage it)
    "M": {"alice": ALL, "carol": INSIDE_A - OUT, "bob": set(), "reader": set(), "dbadmin": ALL},
    "R": {"alice": ALL, "carol": INSIDE_A - OUT, "bob": set(), "reader": set(), "dbadmin": ALL},
}
LEGEND = (
    "S raw SQL records, D record_discovery view, V record_properties, L record_artifacts, "
    "C CLI query, P Python query, F Python query with a forged requester, E OPTIMADE export, "
    "A archive, X artifact fetch, M cancel, R rerun (of the cancelled jobs)"
)


@pytest.mark.slow
def test_the_access_matrix_holds_in_the_database(shared, tmp_path, capsys):
    seen: dict[str, dict[str, set[str]]] = {}
    for role in ROLES:
        cells = {
            **_sql_cells(shared, role),
            **_api_cells(shared, role, tmp_path),
            **_cli_cells(shared, role),
        }
        for letter, levels in cells.items():
            seen.setdefault(letter, {})[role] = levels
    owner = _sql_cells_of(shared, shared.owner_url)
    with capsys.disabled():
        print(f"\n{LEGEND}\n" + " " * 18 + "".join(f"{r:>13}" for r in ROLES) + "   owner")
        for level in LEVELS:
            row = "".join(
                f"{''.join(k if level in seen[k][r] else '-' for k in EXPECTED):>13}" for r in ROLES
            )
            print(f"{level:<18}{row}   {''.join(k if level in owner[k] else '-' for k in 'SDVL')}")
        counts = {
            k: len(raw(shared.owner_url, f"SELECT 1 FROM {t}"))
            for k, t in (
                ("S", "records"),
                ("D", "record_discovery"),
                ("V", "record_properties"),
                ("L", "record_artifacts"),
            )
        }
        print(
            "raw-SQL rows, owner vs each role:",
            {
                k: {
                    "owner": counts[k],
                    **{r: len(raw(shared.url(r), f"SELECT 1 FROM {t}")) for r in ROLES},
                }
                for k, t in (
                    ("S", "records"),
                    ("D", "record_discovery"),
                    ("V", "record_properties"),
                    ("L", "record_artifacts"),
                )
            },
        )
    for letter, by_role in EXPECTED.items():
        for role, levels in by_role.items():
            assert seen[letter][role] == levels, f"{letter} {role}"
    # The owner sees every row of every raw-SQL cell: each role sees fewer in some cell.
    assert all(owner[k] == ALL for k in "SDVL")
    for role in ("carol", "bob", "reader"):
        assert any(seen[k][role] < owner[k] for k in "SDVL")


def test_a_name_claimed_through_the_environment_gives_no_access(shared):
    client = shared.client("bob")
    try:
        with pytest.raises(IdentityError, match="connect as that role"):
            client.identity("alice")
        with pytest.raises(IdentityError, match="matdx_admin"):
            client.identity(admin=True)
        assert client.identity().groups == frozenset({"B"})  # memberships, not $MATDX_GROUPS
    finally:
        client.store.dispose()
    env = {
        "MATDX_STORE": shared.url("bob"),
        "MATDX_HOME": str(shared.home),
        "MATDX_USER": "alice",
        "MATDX_GROUPS": "A",
    }
    done = matdx_cli("query", "--format", "json", env=env)
    assert done.returncode != 0 and "connect as that role" in done.stderr
    assert shared.records["private"] not in done.stdout


def test_bob_cannot_write_into_alices_rows(shared):
    bob = shared.url("bob")
    private = shared.records["private"]
    with psycopg.connect(libpq(bob)) as connection:
        updated = connection.execute(
            "UPDATE records SET access = 'public' WHERE record_id = %s", (private,)
        ).rowcount
        cancelled = connection.execute(
            "UPDATE jobs SET state = 'CANCELLED' WHERE campaign_id = ANY(%s)",
            (list(shared.campaigns["bob"].values()),),
        ).rowcount
        assert (updated, cancelled) == (0, 0)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            connection.execute("DELETE FROM audit_log")
    with psycopg.connect(libpq(bob)) as connection, pytest.raises(psycopg.Error):
        connection.execute(
            "INSERT INTO audit_log (at, actor, action, before, after, reason) "
            "VALUES (now(), 'alice', 'forged', '{}', '{}', '')"
        )
    with psycopg.connect(libpq(bob)) as connection, pytest.raises(psycopg.Error):
        connection.execute(
            "INSERT INTO write_log (at, db_role, operation, table_name, row_id, "
            "before, after) VALUES (now(), 'alice', 'INSERT', 'records', 'x', "
            "'{}', '{}')"
        )
    with psycopg.connect(libpq(bob)) as connection, pytest.raises(psycopg.Error):
        connection.execute("SELECT * FROM api_tokens")


def test_the_database_logs_every_write_with_the_authenticated_role(shared):
    rows = raw(
        shared.owner_url,
        "SELECT db_role, operation, table_name, row_id FROM write_log ORDER BY id",
    )
    inserted = {row[3] for row in rows if row[:3] == ("alice", "INSERT", "records")}
    assert set(shared.records.values()) <= inserted
    campaigns = {row[3] for row in rows if row[:3] == ("alice", "INSERT", "campaigns")}
    assert set(shared.campaigns["alice"].values()) <= campaigns
    # A governance change by alice, claiming to be someone else in the app's audit entry.
    public = shared.records["public"]
    with psycopg.connect(libpq(shared.url("alice"))) as connection:
        connection.execute("UPDATE records SET license = 'CC0-1.0' WHERE record_id = %s", (public,))
        connection.execute(
            "INSERT INTO audit_log (at, actor, action, record_id, before, after, reason) "
            "VALUES (now(), 'alice', 'note', %s, '{}', '{}', 'checked')",
            (public,),
        )
    [(role, before, after)] = raw(
        shared.owner_url,
        f"SELECT db_role, before->>'license', after->>'license' FROM write_log "
        f"WHERE operation = 'UPDATE' AND row_id = '{public}'",
    )
    assert (role, before, after) == ("alice", "CC-BY-4.0", "CC0-1.0")
    [(db_role,)] = raw(shared.owner_url, "SELECT db_role FROM audit_log WHERE action = 'note'")
    assert db_role == "alice"
    # bob reads none of alice's trail.
    assert raw(shared.url("bob"), "SELECT count(*) FROM write_log")[0][0] == 0


def _visible_index_rows(url: str, record_id: str) -> dict[str, int]:
    return {
        table: raw(url, f"SELECT count(*) FROM {table} WHERE record_id = '{record_id}'")[0][0]
        for table in ("record_elements", "record_tags", "record_properties")
    }


def test_index_rows_follow_their_records_governance(shared):
    """The index tables' copies of governance (migration 0007): set with the rows, changed
    with the record, and impossible to forge."""
    from matdx.store.governance import GovernanceChange, set_governance

    alice = Store(shared.home, shared.url("alice"))
    try:
        doc = document(crystal("Cu", 3.61), owner="alice", project="A", access="private",
                       tags=["screening"], band_gap=0.5, energy=-3.7, seed=41)  # fmt: skip
        [record_id] = insert_documents(alice, doc)
        hidden = _visible_index_rows(shared.url("bob"), record_id)
        assert hidden == {"record_elements": 0, "record_tags": 0, "record_properties": 0}
        own = _visible_index_rows(shared.url("alice"), record_id)
        assert own == _visible_index_rows(shared.owner_url, record_id)
        assert all(own.values())
        with alice.transaction() as session:
            set_governance(
                session,
                Requester("alice", frozenset({"A"})),
                GovernanceChange(access="public", license="CC-BY-4.0"),
                record_ids=[record_id],
                reason="published",
            )
        assert _visible_index_rows(shared.url("bob"), record_id) == own
        [copies] = raw(
            shared.owner_url,
            "SELECT array_agg(DISTINCT (owner, project, access, export_control)::text) "
            f"FROM record_properties WHERE record_id = '{record_id}'",
        )
        assert copies == (["(alice,A,public,f)"],)
    finally:
        alice.dispose()
    private = shared.records["private"]
    forged = (
        "INSERT INTO record_elements (element, record_id, owner, project, access,"
        " export_control) VALUES ('Zn', %s, 'alice', 'A', 'public', false)"
    )
    for role in ("alice", "bob"):  # a public copy of a private record; or of someone else's
        with psycopg.connect(libpq(shared.url(role))) as connection, pytest.raises(
            psycopg.errors.InsufficientPrivilege, match="row-level security"
        ):
            connection.execute(forged, (private,))
    assert raw(shared.owner_url, f"SELECT count(*) FROM record_elements WHERE element = 'Zn'"
               f" AND record_id = '{private}'")[0][0] == 0  # fmt: skip


DISCOVERY = {"formula": "Cu", "elements": ["Cu"], "calculation": "static", "owner": "alice"}


@pytest.mark.slow
def test_outsiders_discover_an_embargoed_record_but_never_its_results(shared):
    """Through the CLI, bob and the anonymous reader list alice's embargoed record with its
    discovery metadata (formula, elements, calculation, owner, date, embargo end) from
    record_discovery; its results stay hidden, in the listing, in show and in results."""
    embargoed = shared.records["embargoed"]
    campaign = shared.campaigns["bob"]["embargoed"]  # alice's embargoed campaign
    for role in ("bob", "reader"):
        env = {"MATDX_STORE": shared.url(role), "MATDX_HOME": str(shared.home), "MATDX_USER": ""}
        done = matdx_cli("query", "--format", "json", "--elements", "Cu", env=env)
        assert done.returncode == 0, done.stderr
        listed = {item["record_id"]: item for item in json.loads(done.stdout)["records"]}
        assert {shared.records[level] for level in ("public", "embargoed")} <= set(listed)
        hidden = {shared.records[level] for level in ("private", "group", "controlled")}
        assert not hidden & set(listed), role
        item = listed[embargoed]
        assert {k: item[k] for k in DISCOVERY} == DISCOVERY
        assert item["created_at"] and item["embargo_until"].startswith(str(LATER.date()))
        assert item["energy_per_atom"] is None and item["properties"] == {}
        assert item["code"] is None and item["campaign_id"] is None
        assert listed[shared.records["public"]]["energy_per_atom"] is not None
        shown = matdx_cli("show", "--json", embargoed[:12], env=env)
        assert shown.returncode == 0, shown.stderr
        document = json.loads(shown.stdout)
        assert document["embargoed"] is True and document["created_at"]
        assert document["system"]["chemical_formula_reduced"] == "Cu"
        assert document["method"] == {"calculation": "static"}
        assert document["governance"]["owner"] == "alice"
        assert "results" not in document and "artifacts" not in document
        assert str(-3.0 - 2) not in shown.stdout  # its energy
        refused = matdx_cli("results", campaign, env=env)
        assert refused.returncode != 0 and "not visible" in refused.stderr
        # the count agrees with the listing; a result range never matches it
        client = shared.client(role)
        try:
            assert client.count(elements=["Cu"]) == len(listed)
            ranged = {i["record_id"] for i in client.query(properties={"energy": {"max": 0}}).items}
            assert shared.records["public"] in ranged and embargoed not in ranged
        finally:
            client.store.dispose()
    client = shared.client("alice")  # its owner reads it in full, through records
    try:
        assert client.show(embargoed[:12])["results"]["energy"] == -3.0 - 2
    finally:
        client.store.dispose()


def test_job_state_changes_are_logged_with_the_authenticated_role(shared):
    """Cancel and rerun (and any tick) change job states; the database logs each change with
    the role that made it (migration 0007), readable by the campaign's writers only."""
    alice = Store(shared.home, shared.url("alice"))
    with alice.transaction() as session:
        campaign_id = _campaign(session, "alice", "group")
    alice.dispose()
    client = shared.client("carol")  # alice's project colleague manages the campaign
    try:
        assert client.cancel([campaign_id]) == 1
        assert client.rerun([campaign_id]) == 1
    finally:
        client.store.dispose()
    jobs_of = f"SELECT id FROM jobs WHERE campaign_id = '{campaign_id}'"
    [(job_id,)] = raw(shared.owner_url, jobs_of)
    query = (
        "SELECT db_role, before->>'state', after->>'state', after->>'campaign_id' FROM write_log"
        f" WHERE table_name = 'jobs' AND row_id = '{job_id}' ORDER BY id"
    )
    logged = raw(shared.owner_url, query)
    assert [row[:2] for row in logged] == [("carol", "READY"), ("carol", "CANCELLED")]
    assert logged[0][2] == "CANCELLED" and logged[1][2] != "CANCELLED"
    assert {row[3] for row in logged} == {campaign_id}
    assert raw(shared.url("alice"), query) == logged  # the campaign's owner reads them
    assert raw(shared.url("bob"), query) == []


def test_roles_are_managed_on_postgresql_only(tmp_path, shared):
    sqlite = Store(tmp_path / "one", None) if not os.environ.get("MATDX_STORE") else None
    if sqlite is not None:
        with pytest.raises(RoleError, match="SQLite"):
            add_user(sqlite.engine, "zoe")
        sqlite.dispose()
    owner = Store(shared.home, shared.owner_url)
    try:
        with pytest.raises(RoleError, match="user: 'Bad Name'"):
            add_user(owner.engine, "Bad Name")
        with pytest.raises(RoleError, match="exists already"):
            add_user(owner.engine, "alice")
        with pytest.raises(RoleError, match="not a matdx user"):
            add_member(owner.engine, "A", "nobody_here")
    finally:
        owner.dispose()
    alice = Store(shared.home, shared.url("alice"))
    try:
        with pytest.raises(RoleError, match="CREATEROLE"):
            add_user(alice.engine, "mallory")
    finally:
        alice.dispose()


def _graph(flow: Flow, owner: str, name: str) -> CampaignGraph:
    return CampaignGraph(name, [("test", flow)], {"type": "local", "workers": 2}, {}, owner=owner)


@pytest.mark.slow
def test_bob_running_alices_private_campaign_never_gets_her_numbers(shared):
    alice, bob = shared.client("alice"), shared.client("bob")
    try:
        mine = alice.submit(_graph(Flow([jobs.add(20, 22)]), "alice", "alice-sum"))
        [status] = alice.run(mine, poll_s=0.1, timeout_s=120)
        assert status.done
        his = bob.submit(_graph(Flow([jobs.add(20, 22)]), "bob", "bob-sum"))
        [status] = bob.run(his, poll_s=0.1, timeout_s=120)
        assert status.done
        with bob.store.transaction() as session:
            jobs_of_bob = session.execute(
                select(Job.reused_from, Job.state).where(Job.campaign_id == his)
            ).all()
            owners = set(session.scalars(select(Record.owner)))
            seen_campaigns = set(session.scalars(select(Campaign.id)))
        assert jobs_of_bob == [(None, JobState.COMPLETED)]  # ran himself, reused nothing
        assert "alice" not in owners - {"alice"} and mine not in seen_campaigns
        with alice.store.transaction() as session:
            assert session.scalar(select(Record.owner).where(Record.campaign_id == mine)) == "alice"
        rows = raw(shared.owner_url, "SELECT owner FROM batches WHERE owner IN ('alice', 'bob')")
        assert {r[0] for r in rows} == {"alice", "bob"}  # each tick made its own batches
    finally:
        alice.store.dispose()
        bob.store.dispose()


def test_two_owners_tick_side_by_side_but_one_owner_once(shared):
    from matdx.store.lock import StoreBusy

    alice, bob = Store(shared.home, shared.url("alice")), Store(shared.home, shared.url("bob"))
    second = Store(shared.home, shared.url("alice"))
    owner = Store(shared.home, shared.owner_url)
    try:
        with alice.tick_lock(own_campaigns=True):
            with bob.tick_lock():
                pass  # another owner's tick runs beside alice's
            with pytest.raises(StoreBusy), second.tick_lock():
                pass
            with pytest.raises(StoreBusy), owner.tick_lock():
                pass  # the store-wide tick waits for every owner's
            with alice.transaction() as session:  # her tick sees her campaigns only
                owners = set(session.scalars(select(Campaign.owner)))
            assert owners == {"alice"}
        with bob.transaction() as session:  # outside a tick: every campaign bob may read
            assert "alice" in set(session.scalars(select(Campaign.owner)))
    finally:
        for store in (alice, bob, second, owner):
            store.dispose()


def test_users_and_projects_on_the_command_line(shared):
    env = {"MATDX_STORE": shared.owner_url, "MATDX_HOME": str(shared.home)}
    name = f"u_{uuid.uuid4().hex[:8]}"
    added = matdx_cli("users", "add", name, env=env)
    assert added.returncode == 0 and f"added user {name}" in added.stdout, added.stderr
    member = matdx_cli("projects", "add-member", "C", name, env=env)
    assert member.returncode == 0, member.stderr
    listed = json.loads(matdx_cli("users", "list", "--format", "json", env=env).stdout)
    assert {"user": name, "kind": "user", "admin": False, "projects": "C"} in listed
    refused = matdx_cli("users", "add", "mallory", env={**env, "MATDX_STORE": shared.url("bob")})
    assert refused.returncode == 2 and "CREATEROLE" in refused.stderr
