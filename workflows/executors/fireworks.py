"""The FireWorks executor: a batch's jobs become Fireworks on an existing LaunchPad.

::

    executor: {type: fireworks, launchpad: my_launchpad.yaml, category: matdx}

Each tick adds the jobs it launches as one FireWorks Workflow per batch: one Firework per job,
whose only Firetask (:class:`~matdx.workflows.executors.fireworks_task.RunJobTask`) runs the
job's run directory as ``python -m matdx.workflows.run`` would, with the batch's dependencies
as FireWorks links. FireWorks' own launchers run them (``rlaunch rapidfire``, ``qlaunch``
with its queue adapters, in the users' crontabs as before); the compute side never touches
the matdx store. The packing hints go into each Firework's spec:

* ``_launch_dir``: the job's run directory (FireWorks runs the Firework there);
* ``_priority``: the farm order (long chains and wide jobs first);
* ``_category``: ``category_by_cores`` or ``category``; ``_fworker``: ``fworker``;
* ``_matdx``: batch, job, run directory, cores and estimated run time (s), so that a
  FireWorker can select jobs with a query such as ``{"spec._matdx.cores": {"$lte": 8}}``.

The tick (:meth:`FireworksExecutor.poll`) reads the Fireworks' states and mirrors them into
the batch's event log (``events.jsonl``, the task farm's protocol), from which harvest reads
results as for any batch:

========================  ==================================================================
FireWorks                 matdx
========================  ==================================================================
COMPLETED                 task ended: its ``result.json`` is harvested
FIZZLED (Firetask error)  task ended: the failed result is harvested and matdx's recovery
                          (error handlers, retries) decides; without a result, a crash
FIZZLED without an error  lost (``lpad detect_lostruns --fizzle``): requeued when the batch
                          is over, without spending a retry
RUNNING, no ping for      lost: the tick marks it FIZZLED on the LaunchPad itself, then as
``lost_after`` s          above
DEFUSED; WAITING below a  not run: requeued when the batch is over (as a farm's held or
failed or defused one     skipped tasks)
READY, RESERVED, RUNNING, in flight
PAUSED, WAITING
========================  ==================================================================

A batch is over when none of its Fireworks is in flight; the tick then defuses its remaining
WAITING Fireworks, so that FireWorks never runs an attempt that matdx has requeued. A rerun
Firework (``lpad rerun_fws``, ``lpad detect_lostruns --rerun``) whose job already has a
result does not run it again: the run directory's ``result.json`` is returned as it is, so the
job is recorded once.

FireWorks is imported only by this executor. Its LaunchPad is opened for each step and closed
after it; in FireWorks' mongomock mode (``MONGOMOCK_SERVERSTORE_FILE``, for tests and trials
without MongoDB) closing writes the LaunchPad file, so that a tick and a launcher that run one
after the other see each other's changes (never run them at the same time in that mode).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from matdx.hpc.farm import EVENTS_FILE, Manifest, claim_batch, read_events
from matdx.store.models import Batch
from matdx.workflows.executors.base import Allocation, BatchStatus, Executor
from matdx.workflows.executors.spec import FireworksExecutorSpec, executor_key
from matdx.workflows.rundir import RESULT_FILE, read_json

__all__ = ["FireworksExecutor", "open_launchpad"]

#: Slots of a FireWorks batch: FireWorks' launchers decide how many jobs run at once.
WIDE = 100_000
IN_FLIGHT = ("READY", "RESERVED", "RUNNING", "PAUSED", "WAITING")
NOT_RUN = ("DEFUSED", "ARCHIVED")
PROJECTION = {"fw_id": 1, "state": 1, "spec._matdx": 1, "launches": 1}


@contextlib.contextmanager
def open_launchpad(path: str | Path) -> Iterator[Any]:
    """A FireWorks LaunchPad from its file, saved when the block ends.

    In mongomock mode (mongomock-persistence) the LaunchPad's data are read from the
    ``MONGOMOCK_SERVERSTORE_FILE`` when it is opened and written back here, once, rather than
    when the process exits; with MongoDB every change is already saved. The connection is
    closed either way.
    """
    from fireworks import LaunchPad

    launchpad = LaunchPad.from_file(str(path))
    try:
        yield launchpad
    finally:
        save = getattr(getattr(launchpad.connection, "_store", None), "_finalizer", None)
        if callable(save):
            save()
        launchpad.connection.close()


class FireworksExecutor(Executor):
    """Batches as FireWorks Workflows on a LaunchPad (see the module docstring).

    Parameters
    ----------
    spec
        The campaign's validated ``executor`` section.
    name
        The executor's key (``fireworks:`` and a hash of the LaunchPad file's path).
    """

    def __init__(self, spec: FireworksExecutorSpec, name: str) -> None:
        self.spec = spec
        self.name = name

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], home: str | Path) -> FireworksExecutor:
        return cls(FireworksExecutorSpec.model_validate(dict(spec)), executor_key(spec))

    def capacity(self, active: list[Batch], busy: Mapping[str, int]) -> int:
        return WIDE

    def allocation(
        self, active: list[Batch], busy: Mapping[str, int], spec: Mapping[str, Any]
    ) -> Allocation | None:
        """One new Workflow per tick with up to ``max_tasks_per_batch`` jobs; no walltime
        (FireWorks' queue adapters hold the allocations)."""
        return Allocation(slots=WIDE, max_tasks=self.spec.max_tasks_per_batch)

    def category(self, cores: int) -> str | None:
        """The FireWorks category of a job that needs ``cores`` cores."""
        fitting = [least for least in self.spec.category_by_cores if least <= cores]
        return self.spec.category_by_cores[max(fitting)] if fitting else self.spec.category

    def firework_specs(self, manifest: Manifest) -> list[dict[str, Any]]:
        """The spec of each task's Firework, in manifest order (see the module docstring)."""
        specs = []
        for index, task in enumerate(manifest.tasks):
            spec: dict[str, Any] = {
                "_launch_dir": task.dir,
                "_priority": len(manifest.tasks) - index,
                "_matdx": {
                    "batch": manifest.batch_id,
                    "job": task.id,
                    "run_dir": task.dir,
                    "cores": task.cores,
                    "estimate_s": task.estimate_s,
                },
            }
            category = self.category(task.cores)
            if category is not None:
                spec["_category"] = category
            if self.spec.fworker is not None:
                spec["_fworker"] = self.spec.fworker
            specs.append(spec)
        return specs

    def start(self, batch: Batch, manifest: str) -> dict[str, Any]:
        """Add the batch's Workflow to the LaunchPad.

        The batch directory is claimed first, so that a tick killed while adding it has the
        batch adopted (and its Fireworks found, or its jobs requeued), never run twice.
        """
        from fireworks import Firework, Workflow

        from matdx.workflows.executors.fireworks_task import RunJobTask

        loaded = Manifest.load(manifest)
        claim_batch(batch.directory, f"fireworks {socket.gethostname()} {os.getpid()}")
        fireworks = {}
        for number, (task, spec) in enumerate(
            zip(loaded.tasks, self.firework_specs(loaded), strict=True), start=1
        ):
            fireworks[task.id] = Firework(
                [RunJobTask(run_dir=task.dir)],
                spec=spec,
                name=f"matdx {Path(task.dir).name}",
                fw_id=-number,
            )
        links: dict[Any, list[Any]] = {}
        for task in loaded.tasks:
            for parent in task.after:
                if parent in fireworks:
                    links.setdefault(fireworks[parent], []).append(fireworks[task.id])
        workflow = Workflow(
            list(fireworks.values()),
            links_dict=links,
            name=f"matdx batch {batch.id[:8]}",
            metadata={"matdx_batch": batch.id},
        )
        with open_launchpad(self.spec.launchpad) as launchpad:
            ids = launchpad.add_wf(workflow)
        return {"scheduler_id": f"fw_id {min(ids.values())}", "host": socket.gethostname()}

    def poll(self, batches: list[Batch]) -> dict[str, BatchStatus]:
        """Mirror the Fireworks' states of each batch into its event log; one LaunchPad
        session for all batches."""
        if not batches:
            return {}
        ids = [batch.id for batch in batches]
        query = {"spec._matdx.batch": {"$in": ids}}
        with open_launchpad(self.spec.launchpad) as launchpad:
            _, lost_now, _ = launchpad.detect_lostruns(
                expiration_secs=self.spec.lost_after, fizzle=True, query=query
            )
            documents = list(launchpad.fireworks.find(query, PROJECTION))
            links = _links(launchpad, [d["fw_id"] for d in documents])
            errors = _launch_errors(launchpad, documents)
            by_batch: dict[str, list[dict[str, Any]]] = {batch_id: [] for batch_id in ids}
            for document in documents:
                by_batch[document["spec"]["_matdx"]["batch"]].append(document)
            statuses = {}
            for batch in batches:
                statuses[batch.id] = self._mirror(
                    launchpad, batch, by_batch[batch.id], links, errors, set(lost_now)
                )
        return statuses

    def _mirror(
        self,
        launchpad: Any,
        batch: Batch,
        documents: list[dict[str, Any]],
        links: Mapping[int, list[int]],
        errors: Mapping[int, str | None],
        lost_now: set[int],
    ) -> BatchStatus:
        if not documents:
            return BatchStatus(
                alive=False,
                reason="no Firework of this batch on the LaunchPad (deleted?)",
                infrastructure_failure=True,
            )
        state = {d["fw_id"]: d["state"] for d in documents}
        blocked = _below(
            [i for i, s in state.items() if s in ("FIZZLED", *NOT_RUN)], links
        )
        logged = {e["task"] for e in read_events(batch.directory) if e["event"] == "end"}
        ended, lost, alive = [], [], False
        for document in documents:
            fw_id, fw_state = document["fw_id"], document["state"]
            job = document["spec"]["_matdx"]["job"]
            if fw_state == "COMPLETED":
                ended.append((job, "completed"))
            elif fw_state == "FIZZLED":
                message = errors.get(fw_id)
                if message is None or fw_id in lost_now:
                    lost.append(fw_id)
                elif _has_result(document):
                    ended.append((job, "failed"))
                else:
                    ended.append((job, f"crashed: FireWorks FIZZLED: {message}"))
            elif fw_state in IN_FLIGHT and not (fw_state == "WAITING" and fw_id in blocked):
                alive = True
        new = [(job, status) for job, status in ended if job not in logged]
        if new:
            with open(Path(batch.directory) / EVENTS_FILE, "a") as log:
                for job, status in new:
                    log.write(json.dumps({"event": "end", "task": job, "status": status}) + "\n")
        if alive:
            return BatchStatus(alive=True)
        for fw_id, fw_state in state.items():
            if fw_state == "WAITING":
                launchpad.defuse_fw(fw_id)
        if lost:
            return BatchStatus(
                alive=False,
                reason=f"FireWorks lost runs: fw_id {', '.join(map(str, sorted(lost)))}",
                infrastructure_failure=True,
            )
        return BatchStatus(alive=False, reason="FireWorks workflow done")

    def cancel(self, batch: Batch) -> None:
        """Defuse the batch's Fireworks that have not ended; running ones finish, and their
        results are not harvested once the tick has requeued their jobs."""
        with open_launchpad(self.spec.launchpad) as launchpad:
            for document in launchpad.fireworks.find(
                {"spec._matdx.batch": batch.id, "state": {"$in": list(IN_FLIGHT)}},
                {"fw_id": 1},
            ):
                launchpad.defuse_fw(document["fw_id"])

    def abandon(self, batch: Batch) -> None:
        """A launch given up before its Workflow was added: nothing can be on the LaunchPad
        (the batch is claimed before the Workflow is added), but defuse what may be."""
        self.cancel(batch)


def _links(launchpad: Any, fw_ids: list[int]) -> dict[int, list[int]]:
    """Children of each Firework, from the Workflows that hold them."""
    links: dict[int, list[int]] = {}
    for workflow in launchpad.workflows.find({"nodes": {"$in": fw_ids}}, {"links": 1}):
        for parent, children in workflow["links"].items():
            links[int(parent)] = [int(c) for c in children]
    return links


def _below(roots: list[int], links: Mapping[int, list[int]]) -> set[int]:
    """Every descendant of ``roots``."""
    found: set[int] = set()
    stack = [c for root in roots for c in links.get(root, [])]
    while stack:
        fw_id = stack.pop()
        if fw_id not in found:
            found.add(fw_id)
            stack.extend(links.get(fw_id, []))
    return found


def _launch_errors(launchpad: Any, documents: list[dict[str, Any]]) -> dict[int, str | None]:
    """For each FIZZLED Firework, the last line of its last launch's error, or None when the
    launch stopped without one (a lost run fizzled by ``detect_lostruns``)."""
    last = {d["launches"][-1]: d["fw_id"] for d in documents
            if d["state"] == "FIZZLED" and d.get("launches")}
    errors: dict[int, str | None] = {d["fw_id"]: None for d in documents
                                     if d["state"] == "FIZZLED"}
    for launch in launchpad.launches.find(
        {"launch_id": {"$in": list(last)}}, {"launch_id": 1, "action": 1}
    ):
        stored = ((launch.get("action") or {}).get("stored_data") or {})
        trace = stored.get("_exception", {}).get("_stacktrace")
        if trace:
            lines = [line for line in str(trace).strip().splitlines() if line.strip()]
            errors[last[launch["launch_id"]]] = lines[-1] if lines else "error"
    return errors


def _has_result(document: dict[str, Any]) -> bool:
    run_dir = Path(document["spec"]["_matdx"]["run_dir"])
    try:
        result = read_json(run_dir / RESULT_FILE)
    except (OSError, ValueError):
        return False
    return result.get("job_id") == document["spec"]["_matdx"]["job"]
