"""`matdx cron show`: a crontab line that works under cron's /bin/sh and keeps secrets out."""

from __future__ import annotations

import shlex

from tests.conftest import matdx_cli


def test_cron_line_escapes_percent_and_leaves_the_password_out(tmp_path):
    url = "postgresql+psycopg://ada:s3cr%40t@db.example.org:5433/materials"
    home = tmp_path / "runs%2026"  # cron would cut the line at a bare %
    shown = matdx_cli("cron", "show", "--home", str(home), env={"MATDX_STORE": url})
    assert shown.returncode == 0, shown.stderr
    [line] = shown.stdout.strip().splitlines()
    schedule, command = line[: len("*/5 * * * *")], line[len("*/5 * * * *") + 1 :]
    assert schedule == "*/5 * * * *"
    assert "s3cr" not in line and "\\%" in line and "%" not in line.replace("\\%", "")
    # What cron hands to /bin/sh once it has turned \% back into %:
    words = shlex.split(command.replace("\\%", "%"))
    assert "MATDX_STORE=postgresql+psycopg://ada@db.example.org:5433/materials" in words
    assert f"MATDX_HOME={home}" in words and words[-4:-2] == ["tick", ">>"]
    assert "db.example.org:5433:materials:ada:PASSWORD" in shown.stderr
    assert ".pgpass" in shown.stderr
