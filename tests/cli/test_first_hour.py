"""The CLI as a new user meets it in the first hour (issue 13 points 6-11), typed as a user
types it, at 80 columns."""

from __future__ import annotations

import pytest

from tests.cli.helpers import run_matdx
from tests.conftest import matdx_cli


def test_status_outside_a_store_says_so_and_creates_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MATDX_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MATDX_HOME", raising=False)
    done = run_matdx(capsys, monkeypatch, "status")
    assert done.returncode == 2
    assert "no matdx store in" in done.stderr and "matdx-data" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_run_of_an_unknown_campaign_fails_before_a_progress_bar(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MATDX_STORE", raising=False)
    home = tmp_path / "home"
    assert run_matdx(capsys, monkeypatch, "init", "--home", str(home)).returncode == 0
    done = run_matdx(capsys, monkeypatch, "run", "no-such-campaign", "--home", str(home))
    assert done.returncode == 2
    assert "no-such-campaign" in done.stderr
    assert "running" not in done.stdout and "━" not in done.stdout


def test_errors_print_user_text_literally(tmp_path, capsys, monkeypatch):
    campaign = tmp_path / "c.yaml"
    campaign.write_text("name: x\ndescription: '[/bold] oops'\nrecipe: static\n"
                        "structures: [{file: 'data[raw]/Cu.cif'}]\n")
    done = run_matdx(capsys, monkeypatch, "submit", str(campaign), "--home",
                     str(tmp_path / "h"))
    assert done.returncode == 2
    assert "data[raw]/Cu.cif" in done.stderr  # not data/Cu.cif: [raw] is not markup


def test_install_hint_is_printed_literally():
    from rich.console import Console
    from rich.markup import escape

    from matdx.recipes.codes import CODES

    console = Console(width=80, record=True)
    console.print(f"[bold red]error:[/bold red] {escape(CODES['chgnet'].install_hint)}")
    assert "pip install 'matdx[mlip]'" in console.export_text()


def test_recipes_shows_real_defaults_and_help_is_not_truncated():
    env = {"COLUMNS": "80"}
    done = matdx_cli("recipes", env=env)
    assert done.returncode == 0, done.stderr
    assert "PydanticUndefined" not in done.stdout
    assert "moderate" in done.stdout and "true" in done.stdout  # as written in YAML
    assert all(len(line) <= 80 for line in done.stdout.splitlines())
    top = matdx_cli("--help", env=env).stdout
    assert "Commands" in top


LONG_NAME = "copper-and-friends-equation-of-state-survey-2026"


def _submitted_home(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MATDX_STORE", raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    home = tmp_path / "home"
    campaign = tmp_path / "c.yaml"
    campaign.write_text(f"name: {LONG_NAME}\nrecipe: static\n"
                        "structures: [{bulk: [Cu]}, {bulk: [Al]}, {bulk: [Ag]}]\n")
    done = run_matdx(capsys, monkeypatch, "submit", str(campaign), "--home", str(home))
    assert done.returncode == 0, done.stderr
    return home


def test_status_fits_80_columns_without_cutting_headers_or_numbers(tmp_path, capsys,
                                                                   monkeypatch):
    home = _submitted_home(tmp_path, capsys, monkeypatch)
    done = run_matdx(capsys, monkeypatch, "status", "--home", str(home))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), done.stdout
    header = next(line for line in lines if "┃ campaign" in line)
    assert "…" not in header  # no "camp…", "wait…"
    assert "waiting" in header and "total" in header
    assert "cancelled" not in header  # a state no campaign has is left out
    row = next(line for line in lines if "copper" in line)
    assert row.split("│")[-2].strip() == "3"  # the total, whole

    wide = run_matdx(capsys, monkeypatch, "status", "--home", str(home), "--wide")
    assert wide.returncode == 0
    assert "cancelled" in wide.stdout and LONG_NAME in wide.stdout
    assert max(len(line) for line in wide.stdout.splitlines()) > 80


def test_numbers_are_rounded_to_their_precision_and_never_cut():
    from rich.console import Console

    from matdx.cli.tables import rows_table

    rows = [{"system": "Cu", "T (K)": 300.0, "B0 (GPa)": 134.637912345, "D (cm²/s)": 1.31e-05,
             "E0 (eV/atom)": -3.4901234, "note": "x" * 60, "record": "0123abcd"}]
    console = Console(width=80, record=True)
    console.print(rows_table(rows, width=80, priority=["system", "T (K)", "B0 (GPa)"]))
    text = console.export_text()
    assert "300 " in text and "300.0" not in text
    assert "134.638" in text and "1.31e-05" in text and "-3.49012" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "not shown:" in text and "--wide" in text  # what was left out is named


CIF_WITH_XX = """data_x
_cell_length_a 3.6
_cell_length_b 3.6
_cell_length_c 3.6
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Xx1 Xx 0 0 0
"""


@pytest.mark.parametrize(("name", "content", "says"), [
    ("Xx.cif", CIF_WITH_XX, "unknown name 'Xx' (an element symbol"),
    ("POSCAR", "", "POSCAR is empty"),
    ("cut.vasp", "Cu\n1.0\n", "the file ends early or is empty"),
    ("odd.vasp", "Cu\n1.0 2.0\n3.6 0 0\n0 3.6 0\n0 0 3.6\nCu\n1\nDirect\n0 0 0\n",
     "malformed content: The number of scaling factors must be 1 or 3"),
])
def test_a_bad_structure_file_is_named_with_a_reason(tmp_path, capsys, monkeypatch, name,
                                                     content, says):
    (tmp_path / name).write_text(content)
    campaign = tmp_path / "c.yaml"
    campaign.write_text(f"name: t\nrecipe: static\nstructures: [{{file: {name}}}]\n")
    done = run_matdx(capsys, monkeypatch, "submit", str(campaign), "--home",
                     str(tmp_path / "h"))
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert message.startswith("error: studies[0].structures[0].file:") and name in message
    assert says in message
    assert "Traceback" not in message and not (tmp_path / "h").exists()


def test_install_hint_is_printed_literally_by_submit(tmp_path, capsys, monkeypatch):
    import sys

    from matdx.recipes.codes import CODES

    monkeypatch.setitem(sys.modules, CODES["chgnet"].requires, None)  # not installed
    campaign = tmp_path / "c.yaml"
    campaign.write_text("name: t\nrecipe: static\ncode: chgnet\nstructures: [{bulk: [Cu]}]\n")
    done = run_matdx(capsys, monkeypatch, "submit", str(campaign), "--home",
                     str(tmp_path / "h"))
    assert done.returncode == 2
    assert "pip install 'matdx[mlip]'" in " ".join(done.stderr.split())


def test_usage_lines_use_conventional_forms_and_summaries_are_whole():
    env = {"COLUMNS": "80"}
    for args, usage in ((["submit"], "Usage: matdx submit [OPTIONS] FILE"),
                        (["run"], "Usage: matdx run [OPTIONS] [CAMPAIGN]"),
                        (["results"], "Usage: matdx results [OPTIONS] CAMPAIGN"),
                        (["rerun"], "Usage: matdx rerun [OPTIONS] IDS..."),
                        (["show"], "Usage: matdx show [OPTIONS] ID")):
        done = matdx_cli(*args, "--help", env=env)
        assert done.stdout.splitlines()[0] == usage, done.stdout
    top = matdx_cli("--help", env=env).stdout
    assert "..." not in top.split("Commands")[1]  # no summary cut short
    assert "retry budget." in top
