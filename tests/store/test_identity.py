"""Identity comes from authentication: on SQLite the account running matdx (a store file of
another account is refused), and ``--admin`` is only for administrators."""

from __future__ import annotations

import os

import pytest

from matdx.store.identity import ForeignStore, IdentityError, identify, os_account
from matdx.store.store import Store
from tests.conftest import matdx_cli

NOBODY = 65534


def test_a_sqlite_store_of_another_account_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("MATDX_STORE", raising=False)
    home = tmp_path / "theirs"
    Store(home).dispose()
    os.chown(home / "store.sqlite", NOBODY, NOBODY)
    with pytest.raises(ForeignStore, match=r"belongs to account .*to share a store, put it on "
                                           r"PostgreSQL"):  # fmt: skip
        Store(home)
    refused = matdx_cli("status", "--home", str(home))
    assert refused.returncode == 2 and "to share a store" in refused.stderr


def test_no_other_name_can_be_claimed_on_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("MATDX_STORE", raising=False)
    monkeypatch.delenv("MATDX_USER", raising=False)
    store = Store(tmp_path / "mine")
    me = os_account()
    assert identify(store.engine).user == me
    assert identify(store.engine, me).user == me  # naming oneself is fine
    with pytest.raises(IdentityError, match="cannot claim another identity"):
        identify(store.engine, "alice")
    monkeypatch.setenv("MATDX_USER", "alice")
    with pytest.raises(IdentityError, match="'alice'"):
        identify(store.engine)
    store.dispose()


def test_admin_needs_the_administrator_role(home, store, monkeypatch):
    monkeypatch.delenv("MATDX_USER", raising=False)
    asked = matdx_cli("query", "--admin")
    # SQLite: the one account of the store is its administrator. PostgreSQL: the test connects
    # as the server's superuser, a member of every role, matdx_admin included; a person's role
    # outside matdx_admin is refused (tests/store/test_row_security.py).
    assert asked.returncode == 0, asked.stderr
    assert identify(store.engine, admin=True).admin
