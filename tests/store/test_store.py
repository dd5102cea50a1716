"""The store: schema migrations, artifacts, OPTIMADE fields and the tick lock."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from ase.build import bulk, molecule

from matdx.store.artifacts import ArtifactStore, ObjectStatus, sha256_file
from matdx.store.lock import StoreBusy
from matdx.store.migrate import HEAD_REVISION, alembic_config
from matdx.store.models import Base
from matdx.store.store import Store
from matdx.store.system import optimade_structure


def test_migrations_create_exactly_the_models(home):
    store = Store(home)
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert compare_metadata(context, Base.metadata) == []
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


def test_store_opens_twice_and_uses_wal(home):
    Store(home).dispose()
    store = Store(home)
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


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
