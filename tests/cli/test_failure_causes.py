"""A job that reaches the machine and still fails is reported with its real cause, and
``matdx run`` exits non-zero with a summary of why (issue 13 points 4 and 8).

The job here is a real EMT molecular-dynamics run whose process is killed with SIGKILL while
it runs, as the kernel's out-of-memory killer (or a user) would: the job leaves no
``result.json``, and the reason must say so in words instead of "worker process died".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from matdx.workflows.crash import crash_reason
from tests.cli.helpers import run_matdx

CAMPAIGN = """\
name: doomed
retries: 0
executor: {type: local, workers: 1}
recipe: md
structures: [{bulk: [Cu], cubic: true, repeat: [2, 2, 2]}]
settings: {steps: 10000000, timestep_fs: 2, sample_every: 100000, temperature_K: 300}
"""


def _worker_pid(home: Path, timeout: float = 120.0) -> int:
    """The pid of the worker process that started the job (from the farm's event log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for events in home.glob("batches/*/events.jsonl"):
            for line in events.read_text().splitlines():
                event = json.loads(line)
                if event.get("event") == "start" and "pid" in event:
                    return int(event["pid"])
        time.sleep(0.1)
    raise AssertionError("the job never started")


@pytest.mark.slow
def test_run_of_a_killed_job_exits_1_and_says_why(tmp_path, capsys, monkeypatch):
    # One backend is enough: this is about the farm and the words, not the store.
    monkeypatch.delenv("MATDX_STORE", raising=False)
    home = tmp_path / "home"
    campaign = tmp_path / "doomed.yaml"
    campaign.write_text(CAMPAIGN)
    env = {**os.environ, "MATDX_HOME": str(home), "COLUMNS": "80"}
    matdx = [sys.executable, "-m", "matdx.cli.main"]
    subprocess.run([*matdx, "submit", str(campaign)], env=env, check=True,
                   capture_output=True, timeout=120)
    run = subprocess.Popen([*matdx, "run", "doomed", "--poll", "0.2"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        os.kill(_worker_pid(home), signal.SIGKILL)
        out, err = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, out + err
    flat = " ".join(out.split())
    assert "killed by SIGKILL (signal 9) before it wrote result.json" in flat
    assert "out of memory" in flat
    assert "worker process died" not in flat
    assert "1 job(s) FAILED" in " ".join(err.split())

    monkeypatch.setenv("COLUMNS", "80")
    status = run_matdx(capsys, monkeypatch, "status", "doomed", "--home", str(home))
    assert status.returncode == 0
    assert "killed by SIGKILL" in " ".join(status.stdout.split())


def test_a_result_that_could_not_be_written_names_the_error():
    # What the farm reports when run_task raised while writing result.json (a NaN that
    # reached a JSON writer): the cause, not "worker process died".
    reason = crash_reason("crashed: ValueError: Out of range float values are not JSON "
                          "compliant")
    assert reason == ("the job ran but matdx could not write its result: ValueError: Out of "
                      "range float values are not JSON compliant")


def test_a_crashed_process_names_the_error_it_printed(tmp_path):
    log = tmp_path / "farm.log"
    log.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                   "numpy.linalg.LinAlgError: Singular matrix\nsome noise after\n")
    reason = crash_reason("crashed: worker exit code 1", [tmp_path / "missing.log", log])
    assert reason == ("the job's process exited with code 1 before it wrote result.json; "
                      "last error: numpy.linalg.LinAlgError: Singular matrix")


def test_status_shows_a_cause_shared_by_many_failed_jobs_once(tmp_path, capsys, monkeypatch):
    """A broken batch environment fails every job of a batch with one long message: `matdx
    status` prints it once with the count, and each other cause on its own line."""
    from matdx.client import Client
    from matdx.workflows import Flow
    from matdx.workflows.executors.local import LocalExecutor
    from matdx.workflows.submit import CampaignGraph
    from tests.workflows import jobs

    monkeypatch.delenv("MATDX_STORE", raising=False)
    home = tmp_path / "home"
    broken = ("the batch environment cannot start matdx: load the missing module or activate "
              "the environment in the site profile's setup lines")
    failing = [jobs.fail(broken) for _ in range(5)] + [jobs.fail("other cause")]
    flows = [Flow([job.configure(retries=0)]) for job in failing]
    client = Client(home, executors={"local": LocalExecutor(workers=2)})
    try:
        graph = CampaignGraph("broken", [("fail", flow) for flow in flows],
                              {"type": "local", "workers": 2}, {})
        client.run(client.submit(graph), poll_s=0.1, timeout_s=120)
    finally:
        client.store.dispose()
    monkeypatch.setenv("COLUMNS", "80")
    status = run_matdx(capsys, monkeypatch, "status", "broken", "--home", str(home))
    flat = " ".join(status.stdout.split())
    assert status.returncode == 0, status.stdout + status.stderr
    assert flat.count("the batch environment cannot start matdx") == 1
    assert "FAILED broken · 5 jobs, the same cause: RuntimeError: the batch environment" in flat
    assert "and 2 more" in flat  # three jobs named, the rest counted
    assert flat.count("other cause") == 1
    assert flat.count("FAILED broken") == 2
