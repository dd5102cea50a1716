"""The command line, run as a user runs it: ``matdx ...`` in a subprocess."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from matdx.store.models import Attempt, Base, Batch, Job, Record
from matdx.store.store import Store
from tests.conftest import matdx_cli

STATIC = """\
name: cli-static
executor: {type: local, workers: 2}
recipe: static
structures:
  - bulk: [Cu, Ag, Al]
"""

FAILING = """\
name: cli-failing
recipe: md
structures: [{bulk: [Cu], cubic: true}]
settings: {steps: 100, sample_every: 5, timestep_fs: 2}
"""


def write(tmp_path: Path, text: str, name: str = "campaign.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def query(home: Path, statement):
    """Rows of a ``select()`` on the store the CLI uses (SQLite file or ``$MATDX_STORE``)."""
    store = Store(home)
    try:
        with store.transaction() as session:
            return session.execute(statement).all()
    finally:
        store.dispose()


def table_counts(home: Path) -> dict[str, int]:
    store = Store(home)
    try:
        with store.transaction() as session:
            return {
                table.name: session.scalar(select(func.count()).select_from(table))
                for table in Base.metadata.sorted_tables
            }
    finally:
        store.dispose()


def test_submit_run_status_results_show(home, tmp_path):
    assert matdx_cli("init").returncode == 0
    submitted = matdx_cli("submit", str(write(tmp_path, STATIC)))
    assert submitted.returncode == 0, submitted.stderr
    assert "3 jobs in 3 workflows" in submitted.stdout
    run = matdx_cli("run", "cli-static")
    assert run.returncode == 0, run.stderr
    status = matdx_cli("status", "cli-static")
    assert "cli-static" in status.stdout and "3" in status.stdout

    rows = list(
        csv.DictReader(io.StringIO(matdx_cli("results", "cli-static", "--format", "csv").stdout))
    )
    assert sorted(r["formula"] for r in rows) == ["Ag", "Al", "Cu"]
    assert all(float(r["energy"]) < 1.0 for r in rows)  # EMT energies of the elements, eV
    records = json.loads(matdx_cli("results", "cli-static", "--format", "json").stdout)
    assert {r["job"] for r in records} == {"static"}

    record = json.loads(matdx_cli("show", records[0]["record"], "--json").stdout)
    assert record["kind"] == "record"
    assert record["method"]["code"] == "emt"
    assert record["system"]["nsites"] == 1
    assert record["results"]["stress_convention"].startswith("ase")
    job = json.loads(matdx_cli("show", record["job_id"][:8], "--json").stdout)
    assert job["state"] == "COMPLETED" and job["attempts"][0]["record_id"] == record["record_id"]
    # without --json: a summary a person reads at 80 columns, every section with its units
    summary = matdx_cli("show", records[0]["record"], env={"COLUMNS": "80"}).stdout
    assert all(len(line) <= 80 for line in summary.splitlines()), summary
    for section in ("structure", "method", "results", "provenance", "access", "artifacts"):
        assert f"\n{section}\n" in summary, summary
    assert f"static of {record['system']['chemical_formula_hill']}" in summary
    energy = next(line for line in summary.splitlines() if line.split()[:1] == ["energy"])
    assert energy.strip().endswith(" eV")
    assert "code         emt" in summary and "owner" in summary and "versions" in summary
    job_summary = matdx_cli("show", record["job_id"][:8], env={"COLUMNS": "80"}).stdout
    assert "state" in job_summary and "COMPLETED" in job_summary and "#1" in job_summary
    table = matdx_cli("results", "cli-static").stdout
    assert "energy" in table and "Cu" in table


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("name: x\nrecipe: nonsense\nstructures: [{bulk: [Cu]}]\n", "studies[0].recipe"),
        (
            "name: x\nrecipe: static\nstructures: [{bulk: [Qq]}]\n",
            "studies[0].structures[0].bulk[0]",
        ),
        (
            "name: x\nrecipe: static\nstructures: [{file: overlap.extxyz}]\n",
            "studies[0].structures[0].file: overlap.extxyz: atoms 0 (Cu) and 1 (Cu) overlap",
        ),
        (
            "name: x\nrecipe: md\nstructures: [{bulk: [Cu]}]\nsettings: {temperature_K: -300}\n",
            "studies[0].settings.temperature_K",
        ),
        (
            "name: x\nrecipe: static\nstructures: [{file: nowhere.cif}]\n",
            "studies[0].structures[0].file: no such file",
        ),
        ("name: x\nrecipe: static\nstructures: [{bulk: [Cu]\n", "malformed YAML at line"),
    ],
)
def test_bad_campaign_exits_nonzero_and_leaves_the_store_unchanged(home, tmp_path, text, field):
    data = Path(__file__).parents[1] / "workflows" / "data"
    (tmp_path / "overlap.extxyz").write_text((data / "overlap.extxyz").read_text())
    assert matdx_cli("submit", str(write(tmp_path, STATIC, "good.yaml"))).returncode == 0
    before = table_counts(home)
    files_before = sorted(p.relative_to(home) for p in home.rglob("*") if "tick" not in p.name)

    bad = matdx_cli("submit", str(write(tmp_path, text)))
    assert bad.returncode == 2, (bad.stdout, bad.stderr)
    assert field in bad.stderr, bad.stderr
    assert bad.stderr.startswith("error:"), bad.stderr
    assert table_counts(home) == before
    files_after = sorted(p.relative_to(home) for p in home.rglob("*") if "tick" not in p.name)
    assert files_after == files_before


def test_bad_campaign_on_a_fresh_home_creates_nothing(home, tmp_path):
    bad = matdx_cli(
        "submit", str(write(tmp_path, "name: x\nrecipe: nonsense\nstructures: [{bulk: [Cu]}]\n"))
    )
    assert bad.returncode == 2
    assert not home.exists()


def test_missing_campaign_file(home, tmp_path):
    result = matdx_cli("submit", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "campaign file: no such file" in result.stderr


def test_unknown_identifier(home):
    matdx_cli("init")
    result = matdx_cli("show", "zzzz")
    assert result.returncode == 2 and "no campaign, job or record matches" in result.stderr


def test_concurrent_ticks_never_launch_a_job_twice(home, tmp_path):
    many = (
        "name: many\nexecutor: {type: local, workers: 2}\nrecipe: static\nstructures:\n"
        + "".join(f"  - {{bulk: [Cu], a: {3.5 + 0.01 * i:.2f}}}\n" for i in range(20))
    )
    assert matdx_cli("submit", str(write(tmp_path, many))).returncode == 0
    ticks = [
        subprocess.Popen(
            [sys.executable, "-m", "matdx.cli.main", "tick", "--wait", "30"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [t.communicate(timeout=120) for t in ticks]
    assert all(t.returncode == 0 for t in ticks), outputs
    launched = [int(out.split("launched ")[1].split()[0]) for out, _ in outputs]
    assert sum(launched) == 20  # each job launched by exactly one tick
    assert matdx_cli("run", "many").returncode == 0
    attempts = query(home, select(Attempt.job_id, func.count()).group_by(Attempt.job_id))
    [records] = query(home, select(func.count(), func.count(Record.job_id.distinct())))
    assert len(attempts) == 20 and {n for _, n in attempts} == {1}
    assert tuple(records) == (20, 20)


def test_tick_skips_when_another_holds_the_lock(home):
    from matdx.store.store import Store

    store = Store(home)
    with store.tick_lock():
        result = matdx_cli("tick")
    assert result.returncode == 0
    assert "tick skipped: another tick" in result.stdout


def test_store_verify_detects_missing_and_corrupt_artifacts(home, tmp_path):
    campaign = (
        "name: traj\nrecipe: relax\nstructures: [{bulk: [Cu, Al], cubic: true}]\n"
        "settings: {max_steps: 5}\n"
    )
    assert matdx_cli("submit", str(write(tmp_path, campaign))).returncode == 0
    assert matdx_cli("run").returncode == 0
    clean = matdx_cli("store", "verify")
    assert clean.returncode == 0 and "2 artifact(s) checked: 0 missing, 0 corrupt" in clean.stdout
    objects = sorted((home / "objects").glob("??/??/*"))
    assert len(objects) == 2
    objects[0].chmod(0o644)
    objects[0].write_bytes(objects[0].read_bytes() + b"x")
    objects[1].unlink()
    broken = matdx_cli("store", "verify")
    assert broken.returncode == 1
    assert f"corrupt {objects[0].name}" in broken.stdout
    assert f"missing {objects[1].name}" in broken.stdout
    assert "1 missing, 1 corrupt" in broken.stdout


def test_cancel_and_rerun(home, tmp_path):
    slow = (
        "name: slow\nrecipe: md\nstructures: [{bulk: [Cu], cubic: true}]\n"
        "settings: {steps: 4000, sample_every: 100, timestep_fs: 1}\n"
    )
    assert matdx_cli("submit", str(write(tmp_path, slow))).returncode == 0
    assert "launched 2" in matdx_cli("tick").stdout  # md and its analysis, in one batch
    cancelled = matdx_cli("cancel", "slow")
    assert "2 job(s) cancelled" in cancelled.stdout
    status = matdx_cli("status", "slow").stdout
    assert "2" in status
    rerun = matdx_cli("rerun", "slow")
    assert "2 job(s) put back" in rerun.stdout
    states = {state for (state,) in query(home, select(Job.state))}
    batches = query(home, select(Batch.state))
    assert states == {"WAITING"}
    assert matdx_cli("tick").returncode == 0  # the cancelled farm's batch is closed
    [(ended,)] = query(home, select(func.count()).where(Batch.state == "ENDED"))
    assert ended >= 1
    assert batches
