"""The fireworks executor: matdx campaigns run by FireWorks' own ``rlaunch`` on a LaunchPad.

FireWorks runs in its documented mongomock mode (see ``fireworks_launchpad``): ``matdx tick``,
``rlaunch`` and ``lpad`` run one after the other as subprocesses, never at the same time.
The stores here are SQLite: the executor never touches the store (harvest does, as for every
executor, and is tested on both backends elsewhere).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from matdx.store.models import Attempt, Batch, Job, Record, Workflow
from matdx.store.store import Store
from tests.conftest import matdx_cli, wait_for
from tests.workflows.fireworks_launchpad import (
    FileLaunchPad,
    campaign_file,
    kill_session,
    make_launchpad,
)

# A representative subset of the demo campaign (matdx/demo.yaml), small enough for CI: EOS
# of two fcc metals (relax → 7 points → fit), NVT MD of 32 Cu atoms with g(r) and MSD, and an
# EOS of Cu squeezed to a = 3.3 Å without relaxation, whose fit finds the minimum outside the
# sampled range and returns a Response that replaces it by more points and a new fit.
CAMPAIGN = """\
name: demo-subset
studies:
  - recipe: eos
    code: emt
    structures:
      - bulk: [Cu, Al]
    settings: {points: 7, volume_range: 0.08}
  - recipe: md
    code: emt
    structures:
      - {bulk: [Cu], cubic: true, repeat: [2, 2, 2]}
    settings: {timestep_fs: 4, steps: 100, sample_every: 10, temperature_K: 1000}
  - recipe: eos
    code: emt
    structures:
      - {bulk: [Cu], a: 3.3}
    settings: {points: 7, volume_range: 0.06, relax_first: false}
"""

# MATDX_FIREWORKS_DEMO=full runs the whole demo campaign (matdx/demo.yaml, without its own
# executor line) instead of the subset: the acceptance run, too long for CI.
FULL_DEMO = os.environ.get("MATDX_FIREWORKS_DEMO") == "full"


def _demo_campaign() -> str:
    import matdx

    text = (Path(matdx.__file__).parent / "demo.yaml").read_text()
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.startswith("executor:"))


@pytest.fixture
def sqlite_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "fw-home"
    monkeypatch.setenv("MATDX_HOME", str(home))
    monkeypatch.delenv("MATDX_STORE", raising=False)
    return home


@pytest.fixture
def launchpad(tmp_path: Path) -> FileLaunchPad:
    return make_launchpad(tmp_path / "launchpad")


def _tick(launchpad: FileLaunchPad) -> str:
    done = matdx_cli("tick", env=launchpad.env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _submit(home: Path, launchpad: FileLaunchPad, name: str, jobs: list[Any]) -> None:
    """Submit jobs of ``tests.workflows.jobs`` as one workflow on the fireworks executor."""
    from matdx.client import Client
    from matdx.workflows import Flow
    from matdx.workflows.submit import CampaignGraph

    spec = {"type": "fireworks", "launchpad": str(launchpad.file)}
    client = Client(home)
    try:
        client.submit(CampaignGraph(name, [("test", Flow(jobs))], spec, {}))
    finally:
        client.store.dispose()


def _states(home: Path) -> dict[str, int]:
    store = Store(home)
    try:
        with store.transaction() as session:
            return dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
    finally:
        store.dispose()


def _run_through_fireworks(home: Path, launchpad: FileLaunchPad, rounds: int = 12) -> int:
    """Tick and ``rlaunch rapidfire`` in turn until every job completed; returns the rounds."""
    workdir = home.parent / "rlaunch"
    workdir.mkdir(exist_ok=True)
    for number in range(1, rounds + 1):
        _tick(launchpad)
        states = _states(home)
        if set(states) == {"COMPLETED"}:
            return number
        assert not {"FAILED", "BLOCKED"} & set(states), states
        launchpad.rlaunch(workdir)
    raise AssertionError(f"not done after {rounds} rounds: {_states(home)}")


def _records(home: Path) -> dict[str, tuple[str, str, Any]]:
    """Records by input hash: (workflow, job name, output)."""
    store = Store(home)
    try:
        with store.transaction() as session:
            rows = session.execute(
                select(Record.document, Record.output, Workflow.name)
                .join(Job, Job.record_id == Record.record_id)
                .join(Workflow, Workflow.id == Job.workflow_id)
            ).all()
            attempts = session.scalar(select(func.count()).select_from(Attempt))
            records = session.scalar(select(func.count()).select_from(Record))
    finally:
        store.dispose()
    assert records == attempts == len(rows)  # one record per attempt, every job recorded once
    found = {doc["input_hash"]: (workflow, doc["job_name"], output)
             for doc, output, workflow in rows}
    assert len(found) == len(rows)
    return found


def _differences(ours: Any, theirs: Any, path: str = "output") -> list[str]:
    """Where two outputs differ by more than 1e-8 (artifact payloads: by name only, their
    files hold run times)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        if "sha256" in ours and "media_type" in ours:
            return [] if ours.get("name") == theirs.get("name") else [path]
        if set(ours) != set(theirs):
            return [f"{path}: keys {sorted(set(ours) ^ set(theirs))}"]
        return [d for key in ours for d in _differences(ours[key], theirs[key], f"{path}.{key}")]
    if isinstance(ours, list) and isinstance(theirs, list):
        if len(ours) != len(theirs):
            return [f"{path}: length {len(ours)} != {len(theirs)}"]
        return [d for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
                for d in _differences(a, b, f"{path}[{i}]")]
    if isinstance(ours, float) or isinstance(theirs, float):
        same = math.isclose(ours, theirs, rel_tol=1e-8, abs_tol=1e-8)
        return [] if same else [f"{path}: {ours!r} != {theirs!r}"]
    return [] if ours == theirs else [f"{path}: {ours!r} != {theirs!r}"]


@pytest.mark.slow
def test_demo_subset_through_rlaunch_matches_a_native_run(
    tmp_path, sqlite_home, launchpad, monkeypatch
):
    campaign = _demo_campaign() if FULL_DEMO else CAMPAIGN
    fw_file = campaign_file(tmp_path / "fw.yaml", campaign, launchpad)
    submitted = matdx_cli("submit", str(fw_file), env=launchpad.env)
    assert submitted.returncode == 0, submitted.stderr
    rounds = _run_through_fireworks(sqlite_home, launchpad)
    if not FULL_DEMO:
        assert rounds >= 3  # the Response of the squeezed Cu fit needs rounds of its own

    # FireWorks ran every job: one COMPLETED Firework per job attempt, in matdx batches
    fireworks = launchpad.collection("fireworks")
    matdx_fws = [fw for fw in fireworks if "_matdx" in fw["spec"]]
    completed = [fw for fw in matdx_fws if fw["state"] == "COMPLETED"]
    ours = _records(sqlite_home)
    assert len(completed) == len(ours)
    assert all(fw["state"] in ("COMPLETED", "DEFUSED") for fw in matdx_fws)

    native_home = tmp_path / "native-home"
    monkeypatch.setenv("MATDX_HOME", str(native_home))
    native_file = tmp_path / "native.yaml"
    native_file.write_text("executor: {type: local, workers: 2}\n" + campaign)
    assert matdx_cli("submit", str(native_file)).returncode == 0
    native_run = matdx_cli("run", "--poll", "0.2", timeout=600)
    assert native_run.returncode == 0, native_run.stderr
    theirs = _records(native_home)

    assert set(ours) == set(theirs)  # the same jobs, with the same input hashes
    for input_hash, (workflow, name, output) in ours.items():
        assert (workflow, name) == theirs[input_hash][:2]
        assert _differences(output, theirs[input_hash][2]) == [], (workflow, name)
    print(f"\n{len(ours)} records through rlaunch in {rounds} rounds; the same {len(theirs)} "
          "input hashes and outputs within 1e-8 as the native run")
    if FULL_DEMO:
        return
    # the squeezed Cu: the fit's Response added points beyond the high-volume end, and the
    # new fit found the minimum inside the extended range
    squeezed = [(name, out) for workflow, name, out in ours.values()
                if workflow == "eos Cu" and name == "fit"]
    by_bracket = {bool(out.get("minimum_bracketed")): out for _, out in squeezed}
    points = [out for workflow, name, out in ours.values()
              if workflow == "eos Cu" and name == "eos_point"]
    assert len(points) >= 7 * 2 + 3  # two Cu workflows' 7 points, and at least 3 added
    assert True in by_bracket


def test_rlaunch_killed_mid_job_then_detect_lostruns_records_each_job_once(
    tmp_path, sqlite_home, launchpad
):
    from tests.workflows.jobs import add, sleep

    slow = sleep(4, value=41)
    _submit(sqlite_home, launchpad, "kill", [slow, add(slow.output, 1)])
    _tick(launchpad)
    fireworks = launchpad.collection("fireworks")
    assert len(fireworks) == 2  # the chain in one batch: a FireWorks workflow with a link
    [fw] = [f for f in fireworks if f["state"] == "READY"]
    run_dir = Path(fw["spec"]["_matdx"]["run_dir"])
    workdir = tmp_path / "rlaunch"
    workdir.mkdir()

    process = launchpad.start_rlaunch(workdir)
    # FireWorks writes FW.json into the launch directory (the run dir) when the rocket starts
    wait_for(lambda: (run_dir / "FW.json").is_file(), timeout=120)
    time.sleep(0.5)
    kill_session(process)
    assert not (run_dir / "result.json").is_file()  # killed while the job ran

    # What the LaunchPad file held after the kill: in mongomock mode rlaunch writes its data
    # only when it exits, so the checkout was never saved: the Firework is still READY with
    # no launch (with MongoDB it would be RUNNING with a launch that stops pinging).
    after_kill = {f["fw_id"]: f for f in launchpad.collection("fireworks")}
    assert after_kill[fw["fw_id"]]["state"] == "READY"
    assert after_kill[fw["fw_id"]]["launches"] == []
    assert launchpad.collection("launches") == []

    lost = launchpad.lpad("detect_lostruns", "--rerun")
    assert "0" in lost or lost.strip() == ""  # nothing saved as running, so nothing lost
    _tick(launchpad)  # the job is still in flight for matdx
    assert _states(sqlite_home) == {"RUNNING": 2}
    launchpad.rlaunch(workdir)  # the Firework runs again, in the same run dir, then its child
    _tick(launchpad)
    _tick(launchpad)  # a second harvest adds nothing
    assert _states(sqlite_home) == {"COMPLETED": 2}
    records = _records(sqlite_home)
    assert sorted(out for _, _, out in records.values()) == [41, 42]
    done = launchpad.collection("fireworks")
    assert all(f["state"] == "COMPLETED" and len(f["launches"]) == 1 for f in done)


def test_a_lost_run_saved_as_running_is_rerun_by_detect_lostruns_and_recorded_once(
    tmp_path, sqlite_home, launchpad
):
    """As with MongoDB: the launch was saved RUNNING before the launcher died."""
    body = """\
name: lost
studies:
  - recipe: static
    code: emt
    structures:
      - bulk: [Al]
"""
    assert matdx_cli("submit", str(campaign_file(tmp_path / "l.yaml", body, launchpad)),
                     env=launchpad.env).returncode == 0
    _tick(launchpad)
    [fw] = launchpad.collection("fireworks")
    # a launcher that checked the Firework out and died before it ran the task
    launchpad.python(
        "from fireworks import FWorker\n"
        f"lp.checkout_fw(FWorker(), {fw['spec']['_launch_dir']!r}, fw_id={fw['fw_id']})\n"
    )
    [running] = launchpad.collection("fireworks")
    assert running["state"] == "RUNNING"
    _tick(launchpad)  # not lost yet for matdx (lost_after: 4 h)
    assert _states(sqlite_home) == {"RUNNING": 1}

    launchpad.lpad("detect_lostruns", "--time", "0", "--rerun")
    [rerun] = launchpad.collection("fireworks")
    assert rerun["state"] == "READY"
    launchpad.rlaunch(tmp_path)
    _tick(launchpad)
    assert _states(sqlite_home) == {"COMPLETED": 1}
    assert len(_records(sqlite_home)) == 1


def test_matdx_requeues_a_lost_run_without_spending_a_retry(tmp_path, sqlite_home, launchpad):
    body = """\
name: lost-by-matdx
studies:
  - recipe: static
    code: emt
    structures:
      - bulk: [Ni]
"""
    executor = (
        f'executor: {{type: fireworks, launchpad: "{launchpad.file}", lost_after: 1}}\n'
    )
    path = tmp_path / "m.yaml"
    path.write_text(executor + body)
    assert matdx_cli("submit", str(path), env=launchpad.env).returncode == 0
    _tick(launchpad)
    [fw] = launchpad.collection("fireworks")
    launchpad.python(
        "from fireworks import FWorker\n"
        f"lp.checkout_fw(FWorker(), {fw['spec']['_launch_dir']!r}, fw_id={fw['fw_id']})\n"
    )
    time.sleep(2)
    _tick(launchpad)  # matdx finds the run lost: fizzles it, requeues the job, launches again
    fireworks = {f["fw_id"]: f for f in launchpad.collection("fireworks")}
    assert fireworks[fw["fw_id"]]["state"] == "FIZZLED"
    assert len(fireworks) == 2
    launchpad.rlaunch(tmp_path)
    _tick(launchpad)
    store = Store(sqlite_home)
    try:
        with store.transaction() as session:
            job = session.scalars(select(Job)).one()
            attempts = session.execute(select(Attempt.state, Attempt.reason)).all()
            batches = session.scalars(select(Batch.reason).order_by(Batch.created_at)).all()
    finally:
        store.dispose()
    assert job.state == "COMPLETED" and job.failures == 0 and job.requeues == 1
    assert sorted(state for state, _ in attempts) == ["COMPLETED", "LOST"]
    assert f"FireWorks lost runs: fw_id {fw['fw_id']}" in batches[0]


def test_a_failing_job_fizzles_and_matdx_retries_it(tmp_path, sqlite_home, launchpad):
    from tests.workflows.jobs import add, fail

    broken = fail("no convergence")
    _submit(sqlite_home, launchpad, "failing", [broken, add(broken.output, 1)])
    for _ in range(3):
        _tick(launchpad)
        launchpad.rlaunch(tmp_path)
    _tick(launchpad)
    fireworks = launchpad.collection("fireworks")
    fizzled = [f for f in fireworks if f["state"] == "FIZZLED"]
    assert len(fizzled) == 2  # the first attempt and its retry (retries=1)
    assert {f["state"] for f in fireworks} == {"FIZZLED", "DEFUSED"}  # children never ran
    store = Store(sqlite_home)
    try:
        with store.transaction() as session:
            states = dict(session.execute(select(Job.name, Job.state)).all())
            failed = session.scalars(select(Record.document)).all()
    finally:
        store.dispose()
    assert states["fail"] == "FAILED" and states["add"] != "COMPLETED"
    assert len(failed) == 2 and all("no convergence" in str(d) for d in failed)


def test_the_executor_section_is_checked_before_anything_is_written(tmp_path, sqlite_home):
    path = tmp_path / "bad.yaml"
    path.write_text(
        f'executor: {{type: fireworks, launchpad: "{tmp_path / "missing.yaml"}"}}\n'
        + CAMPAIGN.split("studies:")[0] + "studies:" + CAMPAIGN.split("studies:")[1]
    )
    done = matdx_cli("submit", str(path))
    assert done.returncode == 2
    assert "executor.launchpad" in done.stderr and "no LaunchPad file" in done.stderr
    assert not (sqlite_home / "store.sqlite").exists()


def test_packing_hints_become_priority_category_and_fworker(tmp_path):
    from matdx.hpc.farm import Manifest, Task
    from matdx.workflows.executors.base import executor_for
    from matdx.workflows.executors.spec import executor_key, validate_executor

    file = tmp_path / "my_launchpad.yaml"
    file.write_text("host: localhost\nname: fw\n")
    section = {"type": "fireworks", "launchpad": str(file), "category": "small",
               "category_by_cores": {8: "wide", 32: "huge"}, "fworker": "cluster-a"}
    executor = executor_for(validate_executor(section).model_dump())
    assert executor.name == executor_key(section) and executor.name.startswith("fireworks:")
    manifest = Manifest("b1", "matdx.workflows.run:run_task", [
        Task("j1", "/runs/j1.1", cores=1, estimate_s=60.0),
        Task("j2", "/runs/j2.1", after=("j1",), cores=8),
        Task("j3", "/runs/j3.1", cores=40),
    ])
    specs = executor.firework_specs(manifest)
    assert [s["_category"] for s in specs] == ["small", "wide", "huge"]
    assert [s["_priority"] for s in specs] == [3, 2, 1]  # the farm order, first is highest
    assert {s["_fworker"] for s in specs} == {"cluster-a"}
    assert specs[0]["_launch_dir"] == "/runs/j1.1"
    assert specs[0]["_matdx"] == {"batch": "b1", "job": "j1", "run_dir": "/runs/j1.1",
                                  "cores": 1, "estimate_s": 60.0}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"category": "a b"}, "executor.category"),
        ({"fworker": "x\ny"}, "executor.fworker"),
        ({"category_by_cores": {0: "x"}}, "executor.category_by_cores"),
        ({"lost_after": -5}, "executor.lost_after"),
        ({"queue": "debug"}, "executor.queue"),
    ],
)
def test_bad_fireworks_sections_name_the_field(tmp_path, extra, message):
    from matdx.workflows.campaign import CampaignError, read_campaign

    file = tmp_path / "my_launchpad.yaml"
    file.write_text("host: localhost\nname: fw\n")
    path = tmp_path / "c.yaml"
    section = {"type": "fireworks", "launchpad": str(file), **extra}
    import yaml

    path.write_text(yaml.safe_dump({"executor": section, **yaml.safe_load(CAMPAIGN)}))
    with pytest.raises((CampaignError, ValueError), match=message):
        read_campaign(path)
