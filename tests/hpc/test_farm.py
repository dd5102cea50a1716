"""The task farm on real worker processes, with a runner defined in this module."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from matdx.hpc.farm import (
    Manifest,
    Task,
    TaskGraph,
    batch_claimant,
    claim_batch,
    read_events,
    run_farm,
)

RUNNER = "tests.hpc.test_farm:runner"


def runner(directory: str) -> str:
    """Runs a task described by ``task.json``: sleeps, then succeeds, fails, or dies."""
    spec = json.loads((Path(directory) / "task.json").read_text())
    started = time.time()
    time.sleep(spec.get("sleep", 0.0))
    (Path(directory) / "ran").write_text(f"{started} {time.time()} {os.getpid()}")
    if spec.get("die"):
        os._exit(9)
    return spec.get("status", "completed")


def make(
    tmp_path: Path,
    tasks: dict[str, dict],
    after: dict[str, list[str]] | None = None,
    workers: int = 2,
    deadline: float | None = None,
    estimates: dict | None = None,
) -> Path:
    entries = []
    for name, spec in tasks.items():
        directory = tmp_path / name
        directory.mkdir()
        (directory / "task.json").write_text(json.dumps(spec))
        entries.append(
            Task(
                name,
                str(directory),
                tuple((after or {}).get(name, [])),
                estimate_s=(estimates or {}).get(name),
            )
        )
    batch = tmp_path / "batch"
    batch.mkdir()
    Manifest("b1", RUNNER, entries, workers=workers, deadline=deadline).dump(batch / "m.json")
    return batch / "m.json"


def ends(manifest: Path) -> dict[str, str]:
    return {e["task"]: e["status"] for e in read_events(manifest.parent) if e["event"] == "end"}


def ran(tmp_path: Path, name: str) -> tuple[float, float]:
    start, end, _ = (tmp_path / name / "ran").read_text().split()
    return float(start), float(end)


def test_dependents_start_after_their_parents_and_work_runs_in_parallel(tmp_path):
    manifest = make(
        tmp_path, {"a": {"sleep": 0.3}, "b": {"sleep": 0.3}, "c": {}}, after={"c": ["a", "b"]}
    )
    assert run_farm(manifest) == 0
    assert ends(manifest) == {"a": "completed", "b": "completed", "c": "completed"}
    (a0, a1), (b0, b1), (c0, _) = ran(tmp_path, "a"), ran(tmp_path, "b"), ran(tmp_path, "c")
    assert c0 >= max(a1, b1)
    assert max(a0, b0) < min(a1, b1)  # a and b overlapped on two workers
    events = [e["event"] for e in read_events(manifest.parent)]
    assert events[0] == "farm-start" and events[-1] == "farm-end"


def test_a_failed_or_held_task_holds_back_everything_below_it(tmp_path):
    manifest = make(
        tmp_path,
        {"a": {"status": "failed"}, "b": {}, "c": {}, "h": {"status": "held"}, "i": {}, "free": {}},
        after={"b": ["a"], "c": ["b"], "i": ["h"]},
    )
    assert run_farm(manifest) == 5  # all but "free" did not complete
    assert ends(manifest) == {"a": "failed", "h": "held", "free": "completed"}
    assert not (tmp_path / "b" / "ran").exists() and not (tmp_path / "i" / "ran").exists()


def test_a_dying_worker_is_reported_and_replaced(tmp_path):
    manifest = make(
        tmp_path,
        {"dies": {"die": True}, "after": {}, "other": {}},
        after={"after": ["dies"]},
        workers=1,
    )
    run_farm(manifest)
    status = ends(manifest)
    assert status["dies"].startswith("crashed: worker exit code 9")
    assert status["other"] == "completed"  # a new worker took over
    assert "after" not in status


def test_tasks_that_would_outlast_the_deadline_are_not_started(tmp_path):
    manifest = make(
        tmp_path,
        {"short": {}, "long": {}},
        deadline=time.time() + 30,
        estimates={"short": 1.0, "long": 3600.0},
    )
    assert run_farm(manifest) == 1
    assert ends(manifest) == {"short": "completed"}


def test_a_batch_is_claimed_once(tmp_path):
    assert claim_batch(tmp_path, "abandoned")
    assert not claim_batch(tmp_path, "farm host 1")
    assert batch_claimant(tmp_path) == "abandoned"
    manifest = make(tmp_path, {"a": {}})
    (manifest.parent / "claim").write_text("abandoned")
    assert run_farm(manifest) == 1  # the farm refuses a batch given up by a tick
    assert read_events(manifest.parent) == []


def test_task_graph_orders_and_blocks():
    graph = TaskGraph([Task("a", "."), Task("b", ".", ("a",)), Task("c", ".", ("b", "x"))])
    assert graph.ready() == ["a"]
    graph.start("a")
    assert graph.ready() == []
    graph.end("a", "completed")
    assert graph.ready() == ["b"]  # "x" is outside the manifest: already done
    graph.start("b")
    graph.end("b", "failed")
    assert graph.ready() == [] and graph.blocked == {"c"}


@pytest.mark.parametrize("bad", ["no-colon", "json:nonexistent_function"])
def test_a_broken_runner_path_fails_loudly(tmp_path, bad):
    manifest = make(tmp_path, {"a": {}})
    data = json.loads(manifest.read_text())
    data["runner"] = bad
    manifest.write_text(json.dumps(data))
    with pytest.raises((ImportError, AttributeError, ModuleNotFoundError, ValueError)):
        run_farm(manifest)


def test_a_parents_files_are_durable_and_its_end_logged_before_a_dependent_starts(
    tmp_path, monkeypatch
):
    """Crash consistency: after a power cut the disk can never hold a dependent's result
    without its parent's, because the parent's files are fsynced and its ``end`` event
    written before the dependent starts."""
    manifest = make(tmp_path, {"a": {}, "b": {}, "c": {}}, after={"b": ["a"], "c": ["b"]})
    data = json.loads(manifest.read_text())
    data["sync"] = ["ran"]
    manifest.write_text(json.dumps(data))
    import matdx.hpc.farm as farm

    synced: list[tuple[str, set[str]]] = []  # (task synced, tasks started at that moment)
    real = farm.fsync_many

    def recording(paths):
        paths = list(paths)
        started = {e["task"] for e in read_events(manifest.parent) if e["event"] == "start"}
        synced.extend((Path(p).parent.name, started) for p in paths)
        real(paths)

    monkeypatch.setattr(farm, "fsync_many", recording)
    assert run_farm(manifest) == 0
    assert [task for task, _ in synced] == ["a", "b", "c"]
    started_when = dict(synced)
    assert "b" not in started_when["a"] and "c" not in started_when["b"]
    order = [(e["event"], e.get("task")) for e in read_events(manifest.parent)]
    assert order.index(("end", "a")) < order.index(("start", "b"))
    assert order.index(("end", "b")) < order.index(("start", "c"))
