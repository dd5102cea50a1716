"""Fixtures of the store tests: a store of the test's backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from matdx.store.store import Store


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    """A fresh store on the test's backend (SQLite in ``home``, or its PostgreSQL database)."""
    made = Store(home)
    yield made
    made.dispose()
