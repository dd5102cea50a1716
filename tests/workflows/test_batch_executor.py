"""Batch-queue executors offline: campaign-file sections, packing, polling, scheduler states.

Scheduler commands are replayed by ``FakeRunner`` (tests/hpc/conftest.py); the real cluster
runs in test_slurm_executor.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from matdx.hpc.farm import ABANDONED, batch_claimant, claim_batch
from matdx.hpc.sites import load_site
from matdx.hpc.status import BatchState, JobStatus
from matdx.workflows.allocation import batch_usage
from matdx.workflows.campaign import CampaignError, read_campaign
from matdx.workflows.executors.base import Allocation
from matdx.workflows.executors.batch import BatchQueueExecutor, batch_job_name
from matdx.workflows.executors.pollstate import PollState
from matdx.workflows.executors.spec import executor_key, validate_executor
from matdx.workflows.packing import PackTask, farm_order, pack, units_of
from tests.hpc.conftest import FakeRunner, Reply

SITE = "local-slurm-testcluster"
BASE = {"name": "x", "recipe": "static", "structures": [{"bulk": ["Cu"]}]}


def executor_section(**fields) -> dict:
    return {"type": "slurm", "site": SITE, **fields}


# -- campaign files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"type": "slurm"}, "executor.site: Field required"),
        ({"type": "slurm", "site": "nowhere"}, "executor.site: no site profile named 'nowhere'"),
        ({"type": "pbs", "site": SITE}, "executor.type: site 'local-slurm-testcluster' runs"),
        (
            executor_section(resources={"walltime": "2-00:00:00"}),
            "executor.resources.walltime: 48:00:00 exceeds max_walltime",
        ),
        (
            executor_section(resources={"cores_per_node": 64}),
            "executor.resources.cores_per_node: 64 cores exceed cores_per_node 8",
        ),
        (executor_section(resources={"partition": "a;b"}), "executor.resources.partition"),
        (executor_section(resources={"walltime": "soon"}), "executor.resources.walltime"),
        (executor_section(max_tasks_per_batch=0), "executor.max_tasks_per_batch"),
        (executor_section(farm="threads"), "executor.farm"),
        ({"type": "slurm", "site": SITE, "queue": "x"}, "executor.queue: Extra inputs"),
        ({"type": "dask"}, "executor.scheduler: give exactly one"),
        ({"type": "dask", "scheduler": "tcp://h:1; rm"}, "executor.scheduler"),
        ({"type": "cloud"}, "executor.type: unknown executor 'cloud'"),
    ],
)
def test_bad_executor_sections_name_the_field(section, message):
    with pytest.raises(CampaignError, match=None) as caught:
        read_campaign({**BASE, "executor": section})
    assert message in str(caught.value), str(caught.value)


def test_executor_sections_are_normalised_and_keyed(tmp_path):
    spec = read_campaign(
        {**BASE, "executor": executor_section(resources={"walltime": "30min", "memory": "2G"})}
    ).executor.model_dump(mode="json")
    assert spec["resources"]["walltime"] == 1800 and spec["resources"]["memory"] == 2048
    assert executor_key(spec) == f"slurm:{SITE}"
    site_file = tmp_path / "my-site.yaml"
    site_file.write_text(load_site(SITE).model_dump_json())
    by_path = validate_executor({"type": "slurm", "site": str(site_file)})
    assert by_path.site == str(site_file.absolute())
    assert executor_key(by_path.model_dump()).startswith("slurm:my-site@")
    other = tmp_path / "elsewhere" / "my-site.yaml"  # same name, another site file
    other.parent.mkdir()
    other.write_text(site_file.read_text())
    assert executor_key({"type": "slurm", "site": str(other)}) != executor_key(
        by_path.model_dump()
    )
    assert executor_key({"type": "local", "workers": 3}) == "local"
    dask = executor_key({"type": "dask", "scheduler": "tcp://127.0.0.1:8786"})
    assert dask.startswith("dask:") and len(dask) <= 40


# -- packing -------------------------------------------------------------------------------


def test_units_keep_dependent_jobs_together():
    tasks = [
        PackTask("relax"),
        PackTask("other"),
        PackTask("static", after=("relax",)),
        PackTask("p1", after=("static",)),
        PackTask("p2", after=("static",)),
        PackTask("fit", after=("p1", "p2")),
    ]
    assert [[t.id for t in unit] for unit in units_of(tasks)] == [
        ["relax", "static", "p1", "p2", "fit"],
        ["other"],
    ]


def test_mixed_sizes_fill_few_batches_within_the_walltime():
    sizes = [(4, 10.0)] * 10 + [(2, 8.0)] * 20 + [(1, 6.0)] * 30
    tasks = [PackTask(f"t{i}", cores, est) for i, (cores, est) in enumerate(sizes)]
    work = sum(c * e for c, e in sizes)  # 900 core-s
    allocation = Allocation(slots=8, batches=10, max_tasks=100, walltime_s=120, margin_s=12)
    batches = pack(tasks, allocation)
    assert sum(len(b.tasks) for b in batches) == 60
    assert len(batches) == 2  # 900 core-s / 8 slots = 113 s > 108 s usable per batch
    assert all(b.makespan_s <= 108 for b in batches)
    assert batches[0].makespan_s * 8 <= work  # the first batch is well filled


def test_limits_cap_batches_tasks_and_slots():
    tasks = [PackTask(f"t{i}", 1, 10.0) for i in range(10)]
    one_per_batch = Allocation(slots=8, batches=3, max_tasks=2, walltime_s=1000)
    batches = pack(tasks, one_per_batch)
    assert [len(b.tasks) for b in batches] == [2, 2, 2]  # the queue cap leaves 4 for later
    assert [b.slots_needed for b in batches] == [2, 2, 2]  # no idle slots requested
    untimed = pack([PackTask(f"u{i}", 2) for i in range(3)], Allocation(slots=8, batches=1))
    assert [b.slots_needed for b in untimed] == [6]


def test_a_unit_larger_than_a_batch_is_cut_after_whole_parents():
    chain = [PackTask("a")] + [PackTask(f"b{i}", after=("a",)) for i in range(5)]
    [batch] = pack(chain, Allocation(slots=2, batches=1, max_tasks=3))
    assert [t.id for t in batch.tasks] == ["a", "b0", "b1"]


def test_farm_order_starts_long_chains_and_wide_tasks_first():
    tasks = [
        PackTask("small", 1, 5.0),
        PackTask("wide", 4, 5.0),
        PackTask("head", 1, 2.0),
        PackTask("tail", 1, 9.0, after=("head",)),
    ]
    assert [t.id for t in farm_order(tasks)] == ["head", "tail", "wide", "small"]


# -- polling -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_batch(tmp_path: Path, name: str, job_id: str | None) -> SimpleNamespace:
    directory = tmp_path / name
    directory.mkdir()
    return SimpleNamespace(
        id=name, scheduler_id=job_id, directory=str(directory), info={}, workers=8,
        executor=f"slurm:{SITE}", state="ACTIVE", reason="", created_at=None,
    )


def events(batch, *lines: dict) -> None:
    with open(Path(batch.directory) / "events.jsonl", "a") as handle:
        for line in lines:
            handle.write(json.dumps(line) + "\n")


def squeue_line(job_id: str, state: str, status: int = 0, reason: str = "None") -> str:
    return f"{job_id}|{state}|{status}|{reason}|\n"


def test_one_squeue_for_all_batches_and_none_within_the_interval(tmp_path):
    clock = Clock()
    runner = FakeRunner(
        {
            ("squeue",): Reply(
                squeue_line("11", "RUNNING")
                + squeue_line("12", "TIMEOUT", 15, "TimeLimit")
                + squeue_line("13", "COMPLETED")
            )
        }
    )
    executor = BatchQueueExecutor("slurm", load_site(SITE), tmp_path, runner=runner, clock=clock)
    assert executor.poll_state.min_interval_s == 2  # the site's min_poll_interval
    running, timeout, done = (make_batch(tmp_path, n, i) for n, i in [("a", "11"), ("b", "12"),
                                                                       ("c", "13")])
    events(done, {"t": 1, "event": "farm-start"}, {"t": 2, "event": "farm-end", "reason": "done"})
    statuses = executor.poll([running, timeout, done])
    assert len(runner.argvs) == 1 and "--jobs=11,12,13" in runner.argvs[0]
    assert statuses["a"].alive
    assert not statuses["b"].alive and statuses["b"].infrastructure_failure
    assert statuses["b"].reason.startswith("walltime reached: batch job 12 TIMEOUT")
    assert not statuses["c"].alive and not statuses["c"].infrastructure_failure
    clock.now += 1.0
    again = BatchQueueExecutor("slurm", load_site(SITE), tmp_path, runner=runner, clock=clock)
    skipped = again.poll([running])  # another tick process, within the interval
    assert len(runner.argvs) == 1 and skipped["a"].alive and "not polled" in skipped["a"].reason
    clock.now += 1.5
    again.poll([running])
    assert len(runner.argvs) == 2


def test_poll_state_survives_a_corrupt_file(tmp_path):
    clock = Clock()
    state = PollState(tmp_path / "p.json", 30, clock)
    assert state.due() and state.last() is None
    state.record()
    clock.now += 10
    assert not state.due() and state.wait_s() == pytest.approx(20)
    (tmp_path / "p.json").write_text("{broken")
    assert state.due()


@pytest.mark.parametrize(
    ("native", "exit_status", "farm_ended", "alive", "infrastructure"),
    [
        ("PENDING", 0, False, True, False),
        ("CANCELLED", 15, False, False, True),
        ("NODE_FAIL", 0, False, False, True),
        ("OUT_OF_MEMORY", 0, False, False, True),
        ("FAILED", 768, True, False, False),  # the farm ended with unfinished tasks: exit 3
        ("FAILED", 256, False, False, True),  # the farm never finished: broken environment
    ],
)
def test_scheduler_states_map_to_batch_statuses(
    tmp_path, native, exit_status, farm_ended, alive, infrastructure
):
    runner = FakeRunner({("squeue",): Reply(squeue_line("7", native, exit_status))})
    executor = BatchQueueExecutor("slurm", load_site(SITE), tmp_path, runner=runner)
    batch = make_batch(tmp_path, "b", "7")
    if farm_ended:
        events(batch, {"t": 1, "event": "farm-end", "reason": "done (some tasks could not start)"})
    status = executor.poll([batch])["b"]
    assert (status.alive, status.infrastructure_failure) == (alive, infrastructure), status


def test_a_forgotten_job_is_judged_by_the_farm_files(tmp_path):
    executor = BatchQueueExecutor("slurm", load_site(SITE), tmp_path, runner=FakeRunner())
    forgotten = JobStatus("9", BatchState.UNKNOWN, reason="purged")
    never = make_batch(tmp_path, "never", "9")
    status = executor.status_of(never, forgotten)
    assert not status.alive and status.infrastructure_failure and "never started" in status.reason
    assert batch_claimant(never.directory) == ABANDONED  # a late farm can no longer start
    finished = make_batch(tmp_path, "finished", "9")
    claim_batch(finished.directory, "farm vm 1")
    events(finished, {"t": 1, "event": "farm-start"}, {"t": 5, "event": "farm-end",
                                                        "reason": "done"})
    status = executor.status_of(finished, forgotten)
    assert not status.alive and not status.infrastructure_failure
    killed = make_batch(tmp_path, "killed", "9")
    claim_batch(killed.directory, "farm vm 2")
    events(killed, {"t": 1, "event": "farm-start"})
    status = executor.status_of(killed, forgotten)
    assert not status.alive and status.infrastructure_failure and "killed" in status.reason


# -- submitting and orphans ----------------------------------------------------------------


def test_start_renders_an_mpi_farm_script_named_after_the_batch(tmp_path):
    runner = FakeRunner({("sbatch",): Reply("4242\n")})
    executor = BatchQueueExecutor("slurm", load_site(SITE), tmp_path, runner=runner)
    spec = validate_executor(executor_section(resources={"walltime": "00:10:00"}))
    batch = make_batch(tmp_path, "0e4c7a52-batch", None)
    batch.info = {"spec": spec.model_dump(mode="json"), "slots": 6}
    fields = executor.start(batch, str(Path(batch.directory) / "manifest.json"))
    assert fields["scheduler_id"] == "4242" and fields["info"]["nodes"] == 1
    script = (Path(batch.directory) / "batch.sh").read_text()
    assert f"#SBATCH --job-name={batch_job_name(batch.id)}" in script
    assert "#SBATCH --ntasks-per-node=6" in script and "#SBATCH --time=00:10:00" in script
    assert "mpirun -np 7 " in script  # 6 worker ranks and the scheduling rank
    assert script.rstrip().count("--mpi") == 1 and "matdx.hpc.farm" in script
    assert runner.calls[0]["cwd"] == Path(batch.directory)


@pytest.mark.parametrize(
    ("site_yaml", "argv0", "reply", "found"),
    [
        ("local-slurm-testcluster", "squeue", Reply("31\n32\n"), ["31", "32"]),
        ("example-pbspro-centre", "qselect", Reply("77.pbs01\n"), ["77.pbs01"]),
    ],
)
def test_orphans_are_found_by_name_and_cancelled(tmp_path, site_yaml, argv0, reply, found):
    cancel = "scancel" if argv0 == "squeue" else "qdel"
    runner = FakeRunner({(argv0,): reply, (cancel,): Reply()})
    site = load_site(site_yaml)
    kind = "slurm" if site.scheduler == "slurm" else "pbs"
    executor = BatchQueueExecutor(kind, site, tmp_path, runner=runner)
    batch = make_batch(tmp_path, "b-1", None)
    executor.abandon(batch)
    assert batch_job_name("b-1") in " ".join(runner.argvs[0])
    assert runner.argvs[1][0] == cancel and runner.argvs[1][-len(found):] == found


def test_an_adopted_batch_takes_its_job_id_from_the_farm(tmp_path):
    executor = BatchQueueExecutor("slurm", load_site(SITE), tmp_path, runner=FakeRunner())
    batch = make_batch(tmp_path, "b", None)
    events(batch, {"t": 1, "event": "farm-start", "scheduler_job_id": "55"})
    assert executor.adopt(batch) == {"scheduler_id": "55"}


# -- allocation report ---------------------------------------------------------------------


def test_utilisation_counts_cores_and_killed_tasks(tmp_path):
    batch = make_batch(tmp_path, "b", "1")
    batch.info = {"submitted_at": 90.0}
    events(
        batch,
        {"t": 100.0, "event": "farm-start", "slots": 4},
        {"t": 100.0, "event": "start", "task": "wide", "cores": 2},
        {"t": 100.0, "event": "start", "task": "one", "cores": 1},
        {"t": 110.0, "event": "end", "task": "wide", "status": "completed"},
        {"t": 105.0, "event": "end", "task": "one", "status": "failed"},
        {"t": 106.0, "event": "start", "task": "killed", "cores": 1},
        {"t": 120.0, "event": "farm-end", "reason": "signal SIGTERM"},
    )
    usage = batch_usage(batch)
    assert usage.allocated_core_s == 4 * 20.0
    assert usage.busy_core_s == 2 * 10.0 + 5.0 + 14.0
    assert usage.utilisation == pytest.approx(39.0 / 80.0)
    assert (usage.queue_wait_s, usage.completed, usage.tasks) == (10.0, 1, 3)
