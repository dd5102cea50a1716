"""Exports never overwrite an existing file unless ``--overwrite`` is given."""

from __future__ import annotations

import pytest

from tests.conftest import matdx_cli


@pytest.mark.parametrize(("fmt", "name"), [("optimade", "out.jsonl"), ("parquet", "out.parquet"),
                                           ("ase", "out.db"), ("archive", "out.tar.gz")])
def test_export_refuses_an_existing_file_and_replaces_it_with_overwrite(home, tmp_path, fmt,
                                                                      name):
    target = tmp_path / name
    target.write_text("precious")
    refused = matdx_cli("export", fmt, str(target))
    assert refused.returncode == 2
    assert f"{target} exists; export never overwrites a file unless --overwrite" in refused.stderr
    assert target.read_text() == "precious"

    replaced = matdx_cli("export", fmt, str(target), "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert target.read_bytes() != b"precious"


def test_extxyz_refuses_a_directory_holding_a_split_file(home, tmp_path):
    directory = tmp_path / "xyz"
    directory.mkdir()
    (directory / "validation.xyz").write_text("precious")
    refused = matdx_cli("export", "extxyz", str(directory))
    assert refused.returncode == 2 and "validation.xyz exists" in refused.stderr
    assert (directory / "validation.xyz").read_text() == "precious"
    assert matdx_cli("export", "extxyz", str(directory), "--overwrite").returncode == 0
    assert matdx_cli("export", "extxyz", str(tmp_path / "fresh")).returncode == 0
