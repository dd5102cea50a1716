"""Migration 0004: method columns, and derived records gain their parents' method (issue 14)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from matdx.store.store import Store
from tests.conftest import matdx_cli
from tests.store.factory import document

U3 = {"name": "Cu_u3.eam", "sha256": "a" * 64}


@pytest.fixture
def empty_url(store_backend, request, tmp_path):
    """The URL of a database without any table."""
    if store_backend == "sqlite":
        (tmp_path / "empty").mkdir()
        yield f"sqlite:///{tmp_path / 'empty' / 'store.sqlite'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"empty_{uuid.uuid4().hex[:16]}"
    yield server.create_database(name)
    server.drop_database(name)


def v2(doc: dict, method: dict, parents: list[str] = ()) -> dict:
    """``doc`` as schema v2 wrote it, with this method section."""
    return {**doc, "schema_version": 2, "parents": list(parents),
            "method": {"pseudopotentials": [], "basis": {}, "kpoints": {}, "smearing": {},
                       "spin": {}, "parameters": {}, **method}}


def test_migration_0004_gives_derived_records_their_parents_method(empty_url, tmp_path):
    from matdx.store.access import Requester
    from matdx.store.database import create_store_engine
    from matdx.store.migrate import upgrade
    from matdx.store.search import RecordQuery, search_records

    engine = create_store_engine(empty_url)
    upgrade(engine, "0002")
    lammps = {"code": "lammps", "code_version": "20220623", "calculation": "static",
              "pseudopotentials": [U3],
              "parameters": {"pair_style": "eam", "protocol": "moderate"}}
    points = [v2(document(seed=k, code="lammps"), lammps) for k in range(3)]
    fit = v2(document(energy=None, calculation="eos-fit", properties={"B0_GPa": 138.0}),
             {"calculation": "eos-fit", "parameters": {"fit": "birch-murnaghan-3"}},
             [p["record_id"] for p in points])
    mixed_parent = v2(document(seed=9, code="lammps"),
                      {**lammps, "pseudopotentials": [{"name": "Cu_smf7.eam", "sha256": "b" * 64}]})
    mixed = v2(document(energy=None, calculation="elastic-fit"),
               {"calculation": "elastic-fit"},
               [points[0]["record_id"], mixed_parent["record_id"]])
    emt = v2(document(seed=5), {"code": "emt", "calculation": "static", "functional": "EMT"})
    everything = [*points, fit, mixed_parent, mixed, emt]
    tables = sa.MetaData()
    tables.reflect(engine)
    with engine.begin() as connection:  # what 0002-era matdx wrote
        connection.execute(tables.tables["campaigns"].insert().values(
            id=fit["campaign_id"], name="old", created_at=sa.func.now(), spec={}, executor={},
            tags=[], owner="ada", project="", access="private", license="", force=False))
        for doc in everything:
            connection.execute(tables.tables["records"].insert().values(
                record_id=doc["record_id"], schema_version=2, job_id=doc["job_id"], attempt=1,
                campaign_id=doc["campaign_id"], workflow_id=doc["workflow_id"],
                status="completed", code=doc["method"].get("code"),
                calculation=doc["method"]["calculation"], owner="ada", project="",
                access="private", created_at=sa.func.now(), document=doc))
        before = {name: connection.execute(sa.select(sa.func.count()).select_from(
            tables.tables[name])).scalar() for name in ("records", "campaigns")}
    engine.dispose()

    store = Store(tmp_path / "home", empty_url)  # migrates to the head revision
    with store.engine.connect() as connection:
        after = {name: connection.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar()
                 for name in ("records", "campaigns")}
        columns = {row[0]: row[1:] for row in connection.execute(sa.text(
            "SELECT record_id, code, functional, potential FROM records"))}
    assert after == before == {"records": len(everything), "campaigns": 1}
    assert columns[fit["record_id"]] == ("lammps", None, "eam: Cu_u3.eam")
    assert columns[points[0]["record_id"]] == ("lammps", None, "eam: Cu_u3.eam")
    assert columns[emt["record_id"]] == ("emt", "EMT", None)
    assert columns[mixed["record_id"]] == (None, None, None)  # parents disagree: left alone

    with store.transaction() as session:
        page = search_records(session, RecordQuery.parse(
            calculation=["eos-fit"], potential=["Cu_u3.eam"]), Requester("ada"), documents=True)
        [found] = page.items
        assert found["schema_version"] == 3
        method = found["method"]
        assert (method["code"], method["potential"], method["protocol"]) == (
            "lammps", "eam: Cu_u3.eam", "moderate")
        assert method["calculation"] == "eos-fit"
        assert method["pseudopotentials"] == [U3]
        assert method["parameters"]["fit"] == "birch-murnaghan-3"
        assert found["results"]["properties"]["B0_GPa"] == 138.0
        emt_page = search_records(session, RecordQuery.parse(functional=["emt"]),
                                  Requester("ada"))
        assert [i["record_id"] for i in emt_page.items] == [emt["record_id"]]
    store.dispose()

    sqlite = empty_url.startswith("sqlite")
    env = {} if sqlite else {"MATDX_STORE": empty_url}
    home = tmp_path / "empty" if sqlite else tmp_path / "home"  # SQLite: <home>/store.sqlite
    verify = matdx_cli("store", "verify", "--home", str(home), env=env)
    assert verify.returncode == 0, verify.stderr
    assert "0 missing" in verify.stdout or "ok" in verify.stdout.lower(), verify.stdout
