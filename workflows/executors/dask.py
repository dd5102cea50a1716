"""The Dask executor: a batch's tasks run as Dask tasks, on a running scheduler or on a
dask-jobqueue cluster started for the batch.

Each batch gets a driver process on this machine, detached from the tick like a local farm::

    python -m matdx.workflows.executors.dask MANIFEST SPEC

The driver connects to ``executor.scheduler`` (or starts a ``SLURMCluster`` with the section's
queue, cores, memory, walltime and interface, scaled to ``workers`` batch jobs), and runs the
ordinary task farm (:func:`matdx.hpc.farm.run_farm`) with a :class:`DaskPool`: the farm keeps
the task graph, the deadline, the claim file and the event log, and each task it starts
becomes one Dask task that runs the job in a fresh Python process on a Dask worker
(:func:`~matdx.hpc.farm.run_in_process`: a worker runs tasks in threads, and a job changes its
working directory). Results come back as run
directories, harvested by the tick as for any batch; the compute side never touches the store.
The tick follows the driver process like a local farm.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from matdx.hpc.farm import Manifest, Task, run_farm, run_in_process
from matdx.hpc.resources import format_hms
from matdx.store.models import Batch
from matdx.workflows.executors.base import Allocation
from matdx.workflows.executors.local import THREAD_VARIABLES, LocalExecutor
from matdx.workflows.executors.spec import DaskExecutorSpec, executor_key

__all__ = ["DaskExecutor", "DaskPool", "main"]

SPEC_FILE = "dask.json"
WORKER_WAIT_S = 300.0  # how long the driver waits for the first Dask worker


class DaskPool:
    """Task slots on a Dask cluster, for :func:`~matdx.hpc.farm.run_farm`.

    Parameters
    ----------
    client
        A connected ``distributed.Client``.
    runner_path
        The manifest's runner (``module:function``), importable on the workers.
    slots
        Tasks to run at once; by default the threads of the workers present once at least one
        has joined. Either way the pool waits for a first worker; tasks submitted before the
        others join wait in Dask's queue.
    """

    mode = "dask"

    def __init__(self, client: Any, runner_path: str, slots: int | None = None) -> None:
        self.client = client
        self.runner_path = runner_path
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        if slots is None:
            workers = client.scheduler_info()["workers"].values()
            slots = sum(int(w.get("nthreads", 1)) for w in workers)
        self.size = max(1, int(slots))
        self._futures: dict[Any, str] = {}
        self._cores: dict[str, int] = {}

    @property
    def free(self) -> int:
        return self.size - sum(self._cores.values())

    def acquire(self, cores: int) -> bool | None:
        return True if cores <= self.free else None

    def submit(self, _handle: bool, task: Task) -> dict[str, Any]:
        future = self.client.submit(
            run_in_process, self.runner_path, task.dir, key=f"matdx-{task.id}", pure=False
        )
        self._futures[future] = task.id
        self._cores[task.id] = task.cores
        return {"key": future.key}

    def results(self, timeout: float | None) -> Iterator[tuple[str, str]]:
        from distributed import wait

        if not self._futures:
            return
        try:
            done, _ = wait(list(self._futures), timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return
        for future in done:
            task_id = self._futures.pop(future)
            self._cores.pop(task_id, None)
            if future.status == "finished":
                status = future.result()
            else:
                status = f"crashed: dask task {future.status}: {future.exception()}"
            yield task_id, status

    def close(self, kill: bool = False) -> None:
        if kill and self._futures:
            self.client.cancel(list(self._futures))


class DaskExecutor(LocalExecutor):
    """Batches as Dask driver processes on this machine (see the module docstring).

    One batch runs at a time per executor; its slots are the cluster's threads.
    """

    def __init__(self, spec: DaskExecutorSpec, name: str) -> None:
        super().__init__(workers=1)
        self.spec = spec
        self.name = name

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], home: str | Path) -> DaskExecutor:
        return cls(DaskExecutorSpec.model_validate(dict(spec)), executor_key(spec))

    @property
    def slots(self) -> int:
        """Tasks one batch runs at once: the cluster's threads, or ``tasks_in_flight`` on a
        scheduler of unknown size."""
        if self.spec.cluster is not None:
            return self.spec.workers * self.spec.cores
        return self.spec.tasks_in_flight

    def capacity(self, active: list[Batch], busy: Mapping[str, int]) -> int:
        return self.slots if not active else 0

    def allocation(
        self, active: list[Batch], busy: Mapping[str, int], spec: Mapping[str, Any]
    ) -> Allocation | None:
        if active:
            return None
        return Allocation(
            slots=self.slots,
            max_tasks=self.spec.tasks_in_flight,
            walltime_s=float(self.spec.walltime) if self.spec.cluster else None,
            margin_s=min(60.0, 0.1 * self.spec.walltime) if self.spec.cluster else 0.0,
        )

    def start(self, batch: Batch, manifest: str) -> dict[str, Any]:
        directory = Path(batch.directory)
        spec_file = directory / SPEC_FILE
        spec_file.write_text(json.dumps(self.spec.model_dump(mode="json")))
        env = dict(os.environ)
        for name in THREAD_VARIABLES:
            env.setdefault(name, "1")
        log = open(directory / "farm.log", "ab")  # noqa: SIM115 (handed to child)
        with log:
            process = subprocess.Popen(
                [sys.executable, "-m", "matdx.workflows.executors.dask", manifest, str(spec_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=directory,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        return {"scheduler_id": str(process.pid), "host": socket.gethostname()}


def _client(spec: DaskExecutorSpec, directory: Path, batch_id: str) -> tuple[Any, Any]:
    """A client on the section's scheduler, or on a new local or Slurm cluster (returned
    too, to be closed with the batch)."""
    from distributed import Client

    if spec.scheduler is not None:
        return Client(spec.scheduler, timeout=60), None
    if spec.cluster == "local":
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=spec.workers, threads_per_worker=spec.cores,
                               processes=True, dashboard_address=None)
        return Client(cluster), cluster
    from dask_jobqueue import SLURMCluster

    options: dict[str, Any] = {
        "cores": spec.cores,
        "processes": spec.processes,
        "memory": spec.memory,
        "walltime": format_hms(spec.walltime),
        "job_name": f"matdx-{batch_id}",
        "log_directory": str(directory / "dask-logs"),
        "python": sys.executable,
    }
    for key in ("queue", "account", "interface"):
        if getattr(spec, key) is not None:
            options[key] = getattr(spec, key)
    cluster = SLURMCluster(**options)
    cluster.scale(jobs=spec.workers)
    return Client(cluster), cluster


def main(argv: list[str] | None = None) -> int:
    """The driver of one batch: ``python -m matdx.workflows.executors.dask MANIFEST SPEC``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m matdx.workflows.executors.dask MANIFEST SPEC", file=sys.stderr)
        return 2
    manifest_path, spec_path = Path(argv[0]).absolute(), Path(argv[1])
    spec = DaskExecutorSpec.model_validate(json.loads(spec_path.read_text()))
    manifest = Manifest.load(manifest_path)
    client, cluster = _client(spec, manifest_path.parent, manifest.batch_id)
    try:
        slots = spec.workers * spec.cores if cluster is not None else None
        unfinished = run_farm(manifest_path, pool=DaskPool(client, manifest.runner, slots))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return 0 if unfinished == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
