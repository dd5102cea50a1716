"""Claiming rows with FOR UPDATE SKIP LOCKED (PostgreSQL) and the advisory tick lock."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select

from matdx.store.lock import StoreBusy, claim_rows
from matdx.store.models import Artifact, utcnow


def test_claimed_rows_are_skipped_by_concurrent_claimers(store):
    rows = [
        {"sha256": f"{i:064x}", "size": i, "media_type": "text/plain", "created_at": utcnow()}
        for i in range(6)
    ]
    with store.transaction() as session:
        session.execute(insert(Artifact), rows)
    work = select(Artifact.sha256).order_by(Artifact.sha256).limit(2)
    if store.backend == "postgresql":
        with store.transaction() as first:
            mine = first.scalars(claim_rows(work, first, of=Artifact)).all()
            with store.transaction() as second:  # a concurrent claimer gets the next rows
                theirs = second.scalars(claim_rows(work, second, of=Artifact)).all()
        assert mine == [rows[0]["sha256"], rows[1]["sha256"]]
        assert theirs == [rows[2]["sha256"], rows[3]["sha256"]]
        sql = str(claim_rows(work, first, of=Artifact).compile(store.engine))
        assert "FOR UPDATE" in sql and "SKIP LOCKED" in sql
    else:  # transactions are serialised by BEGIN IMMEDIATE: the statement is unchanged
        with store.transaction() as session:
            claimed = claim_rows(work, session)
            assert claimed is work
            assert "FOR UPDATE" not in str(claimed.compile(store.engine))


def test_busy_message_names_the_holder(store, home):
    from matdx.store.store import Store

    other = Store(home)
    with (
        store.tick_lock(),
        pytest.raises(StoreBusy, match=r"another tick \(pid \d+"),
        other.tick_lock(wait_s=0.1),
    ):
        pass
    other.dispose()
