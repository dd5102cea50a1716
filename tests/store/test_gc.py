"""`matdx store gc`: unreferenced, old objects go; referenced or recent ones never do."""

from __future__ import annotations

import os
import time

from sqlalchemy import insert, select

from matdx.store.gc import collect_garbage
from matdx.store.integrity import verify_artifacts
from matdx.store.models import Artifact, utcnow
from tests.conftest import matdx_cli
from tests.store.factory import artifact, document, insert_documents

DAY = 86_400


def age(store, sha256: str, seconds: float) -> None:
    path = store.artifacts.path(sha256)
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_gc_removes_only_old_unreferenced_objects(store):
    referenced = artifact(store, b"trajectory of a stored record")
    insert_documents(store, document(artifacts=[referenced]))
    orphan, _ = store.artifacts.put_bytes(b"left by a failed import")
    fresh, _ = store.artifacts.put_bytes(b"written just now, record not committed yet")
    with store.transaction() as session:  # an artifact row nobody links to
        row = {"sha256": orphan, "size": 23, "media_type": "text/plain", "created_at": utcnow()}
        session.execute(insert(Artifact), [row])
    for sha256 in (referenced.sha256, orphan):
        age(store, sha256, 2 * DAY)

    dry = collect_garbage(store, dry_run=True, grace_s=DAY)
    assert dry.removed == [orphan] and dry.spared == [fresh] and dry.referenced == 1
    assert store.artifacts.exists(orphan)

    report = collect_garbage(store, grace_s=DAY)
    assert report.removed == [orphan] and report.freed_bytes == 23
    assert not store.artifacts.exists(orphan)
    assert store.artifacts.exists(referenced.sha256) and store.artifacts.exists(fresh)
    with store.transaction() as session:
        assert session.scalars(select(Artifact.sha256)).all() == [referenced.sha256]
    assert verify_artifacts(store).ok

    # Writing an object again freshens it: one about to be referenced again is spared.
    age(store, fresh, 2 * DAY)
    store.artifacts.put_bytes(b"written just now, record not committed yet")
    assert collect_garbage(store, grace_s=DAY).removed == []
    assert store.artifacts.exists(fresh)


def test_gc_on_the_command_line_never_deletes_a_referenced_object(home, store):
    referenced = artifact(store, b"output")
    insert_documents(store, document(artifacts=[referenced]))
    orphan, _ = store.artifacts.put_bytes(b"garbage")
    done = matdx_cli("store", "gc", "--grace", "0")
    assert done.returncode == 0, done.stderr
    assert "2 object(s), 1 referenced; removed 1" in done.stdout
    assert store.artifacts.exists(referenced.sha256) and not store.artifacts.exists(orphan)
    assert matdx_cli("store", "verify").returncode == 0
