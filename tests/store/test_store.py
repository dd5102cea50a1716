"""The store: schema migrations, artifacts, OPTIMADE fields and the tick lock."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from ase.build import bulk, molecule
from sqlalchemy import select

from matdx.store.artifacts import ArtifactStore, ObjectStatus, sha256_file
from matdx.store.lock import StoreBusy
from matdx.store.migrate import HEAD_REVISION, alembic_config, current_revision
from matdx.store.models import Base
from matdx.store.store import Store
from matdx.store.system import optimade_structure


@pytest.fixture
def empty_url(store_backend, request, tmp_path):
    """The URL of a database without any table (not the migrated test template)."""
    if store_backend == "sqlite":
        (tmp_path / "empty").mkdir()
        yield f"sqlite:///{tmp_path / 'empty' / 'store.sqlite'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"empty_{uuid.uuid4().hex[:16]}"
    yield server.create_database(name)
    server.drop_database(name)


def test_migrations_create_exactly_the_models(empty_url, tmp_path):
    store = Store(tmp_path / "home", empty_url)
    with store.engine.connect() as connection:
        assert current_revision(store.engine) == HEAD_REVISION
        context = MigrationContext.configure(connection)
        assert compare_metadata(context, Base.metadata) == []
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION
    store.dispose()


def test_sqlite_store_opens_twice_and_uses_wal(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    Store(tmp_path, url).dispose()
    store = Store(tmp_path, url)
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.dispose()


def test_postgresql_urls_use_psycopg_and_hide_passwords(tmp_path):
    from matdx.store.database import StoreURLError, normalize_url, safe_url

    assert normalize_url("postgresql://u:secret@db:5432/matdx") == (
        "postgresql+psycopg://u:secret@db:5432/matdx"
    )
    assert normalize_url("postgres://db/matdx") == "postgresql+psycopg://db/matdx"
    assert normalize_url("postgresql+psycopg2://db/matdx") == "postgresql+psycopg://db/matdx"
    assert "secret" not in safe_url("postgresql+psycopg://u:secret@db/matdx")
    with pytest.raises(StoreURLError, match="unsupported backend 'mysql'"):
        normalize_url("mysql://db/matdx")


def test_artifacts_are_content_addressed_and_verified(tmp_path):
    objects = ArtifactStore(tmp_path / "objects")
    source = tmp_path / "traj.h5"
    source.write_bytes(b"frames" * 1000)
    sha, size = objects.put_file(source)
    assert (sha, size) == sha256_file(source)
    assert objects.path(sha).relative_to(objects.root).parts == (sha[:2], sha[2:4], sha)
    assert objects.put_file(source) == (sha, size)  # idempotent
    assert list(objects) == [sha]
    copy = objects.materialize(sha, tmp_path / "run" / "inputs" / "traj.h5")
    assert copy.read_bytes() == source.read_bytes()
    copy.write_bytes(b"edited")  # a job editing its input copy leaves the object intact
    assert objects.verify(sha) == ObjectStatus.OK
    objects.path(sha).chmod(0o644)
    objects.path(sha).write_bytes(b"bitrot")
    assert objects.verify(sha) == ObjectStatus.CORRUPT
    objects.remove(sha)
    assert objects.verify(sha) == ObjectStatus.MISSING
    with pytest.raises(ValueError, match="sha256"):
        objects.path("../../etc/passwd")


def test_optimade_fields_of_a_crystal_and_a_molecule():
    rocksalt = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    fields = optimade_structure(
        rocksalt.cell.array, rocksalt.positions, rocksalt.get_chemical_symbols(), rocksalt.pbc
    )
    assert fields["chemical_formula_reduced"] == "ClNa"
    assert fields["chemical_formula_anonymous"] == "AB"
    assert fields["elements"] == ["Cl", "Na"] and fields["elements_ratios"] == [0.5, 0.5]
    assert fields["nsites"] == 8 and fields["dimension_types"] == [1, 1, 1]
    ethanol = molecule("CH3CH2OH")
    fields = optimade_structure(
        ethanol.cell.array, ethanol.positions, ethanol.get_chemical_symbols(), ethanol.pbc
    )
    assert fields["chemical_formula_hill"] == "C2H6O"
    assert fields["chemical_formula_reduced"] == "C2H6O"
    assert fields["chemical_formula_anonymous"] == "A6B2C"
    assert fields["nperiodic_dimensions"] == 0


def test_structure_hash_ignores_site_order_and_wrapping():
    atoms = bulk("Cu", cubic=True)
    shuffled = atoms[[3, 1, 0, 2]]
    shuffled.positions[0] += atoms.cell[0]  # the same site one cell over

    def digest(a):
        return optimade_structure(a.cell.array, a.positions, a.get_chemical_symbols(), a.pbc)[
            "structure_hash"
        ]

    assert digest(atoms) == digest(shuffled)
    moved = atoms.copy()
    moved.positions[0] += 0.01
    assert digest(moved) != digest(atoms)
    assert np.allclose(atoms.positions, bulk("Cu", cubic=True).positions)


def test_tick_lock_is_exclusive_and_waits(home):
    """On SQLite a file lock, on PostgreSQL an advisory lock: the same behaviour."""
    store = Store(home)
    released = threading.Event()

    def hold():
        with store.tick_lock():
            released.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.2)
    other = Store(home)
    with pytest.raises(StoreBusy, match="another tick"), other.tick_lock(wait_s=0.2):
        pass
    threading.Timer(0.3, released.set).start()
    with other.tick_lock(wait_s=5):  # waits for the holder, then gets it
        pass
    holder.join()
    with store.tick_lock():  # released: the first store takes it again at once
        pass
    store.dispose()
    other.dispose()


def test_migration_0002_keeps_and_indexes_existing_records(empty_url, tmp_path):
    """A store made by 0001 with a v1 record: 0002 indexes it, brings its governance columns
    and its campaign's defaults to v2 (a dateless embargo becomes group access; a licence
    text that is not SPDX becomes LicenseRef-), and readers upgrade it."""
    import sqlalchemy as sa

    from matdx.store.access import Requester
    from matdx.store.database import create_store_engine
    from matdx.store.migrate import upgrade
    from matdx.store.models import RecordElement, RecordProperty
    from matdx.store.search import RecordQuery, search_records
    from tests.store.factory import crystal, document

    engine = create_store_engine(empty_url)
    upgrade(engine, "0001")
    old = document(crystal("NaCl"), band_gap=5.0, owner="ada", properties={"B0_GPa": 25.0})
    old["schema_version"] = 1
    old["governance"].update(license="Our own licence", access="embargoed")
    tables = sa.MetaData()
    tables.reflect(engine)
    with engine.begin() as connection:  # what 0001-era matdx wrote, row by row
        stamp = sa.func.now()
        connection.execute(
            tables.tables["campaigns"]
            .insert()
            .values(
                id=old["campaign_id"],
                name="old",
                created_at=stamp,
                spec={},
                executor={},
                tags=[],
                owner="ada",
                project="",
                access="embargoed",
                license="Our own licence",
                force=False,
            )
        )
        connection.execute(
            tables.tables["workflows"]
            .insert()
            .values(
                id=old["workflow_id"],
                campaign_id=old["campaign_id"],
                name="w",
                recipe="static",
                created_at=stamp,
                info={},
            )
        )
        connection.execute(
            tables.tables["jobs"]
            .insert()
            .values(
                id=old["job_id"],
                campaign_id=old["campaign_id"],
                workflow_id=old["workflow_id"],
                position=0,
                name="static",
                function="f",
                inputs={},
                state="COMPLETED",
                reason="",
                attempt=1,
                failures=0,
                retries=2,
                requeues=0,
                corrections=[],
                resources={},
                force=False,
                created_at=stamp,
                updated_at=stamp,
            )
        )
        connection.execute(
            tables.tables["records"]
            .insert()
            .values(
                record_id=old["record_id"],
                schema_version=1,
                job_id=old["job_id"],
                attempt=1,
                campaign_id=old["campaign_id"],
                workflow_id=old["workflow_id"],
                status="completed",
                chemical_formula_reduced="ClNa",
                elements=",Cl,Na,",
                nsites=2,
                owner="ada",
                project="",
                access="embargoed",
                license="Our own licence",
                created_at=stamp,
                document=old,
            )
        )
    engine.dispose()

    store = Store(tmp_path / "home", empty_url)  # migrates to the head revision
    assert current_revision(store.engine) == HEAD_REVISION
    with store.transaction() as session:
        elements = session.scalars(select(RecordElement.element).order_by(RecordElement.element))
        assert elements.all() == ["Cl", "Na"]
        properties = dict(session.execute(select(RecordProperty.name, RecordProperty.value)).all())
        assert properties["band_gap"] == 5.0 and properties["B0_GPa"] == 25.0
        page = search_records(
            session, RecordQuery.parse(elements=["Na"]), Requester("ada"), documents=True
        )
        columns = session.execute(sa.text("SELECT access, license FROM records")).one()
        assert tuple(columns) == ("group", "LicenseRef-Our-own-licence")
        campaign = session.execute(sa.text("SELECT access, license FROM campaigns")).one()
        assert tuple(campaign) == ("group", "LicenseRef-Our-own-licence")
        # Nobody but the owner and the project sees the formerly dateless embargo.
        assert search_records(session, RecordQuery.parse(), Requester("bob")).items == []
    [upgraded] = page.items
    governance = upgraded["governance"]
    assert upgraded["schema_version"] == 3  # read documents are brought to the current version
    assert (governance["access"], governance["license"]) == tuple(columns)
    store.dispose()
