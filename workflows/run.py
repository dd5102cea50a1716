"""Run one job attempt from its run directory, without any store access.

Usage::

    python -m matdx.workflows.run RUNDIR

reads ``RUNDIR/job.json``, calls the job's function with the run directory as working
directory, and writes ``RUNDIR/result.json`` durably (in a task farm that makes results
durable itself, batched, the farm does). The task farm calls :func:`run_task` the same way
inside an allocation.

When the job was packed into one batch with its parents, ``job.json`` lists those parents'
run directories under ``pending_parents``; their outputs are read from their ``result.json`` and
``job.json`` is rewritten with the resolved inputs before the function runs, so every run
directory ends up self-contained. ``result.json`` follows the typed, versioned protocol of
:mod:`matdx.workflows.protocol`, which harvest reads back through the same model.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
import traceback
from contextvars import ContextVar
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from matdx.hpc.farm import FARM_SYNCS
from matdx.workflows.job import decode_inputs, load_function
from matdx.workflows.protocol import RESULT_SCHEMA_VERSION, ResultFile
from matdx.workflows.reference import resolve_references
from matdx.workflows.response import Response
from matdx.workflows.rundir import (
    JOB_FILE,
    RESULT_FILE,
    UntrustedRunDir,
    input_hash,
    read_json,
    read_result,
    write_json_atomic,
)
from matdx.workflows.serialization import encode

__all__ = ["TaskStatus", "job_resources", "library_versions", "main", "run_task"]

_RESOURCES: ContextVar[dict[str, Any] | None] = ContextVar("matdx_job_resources", default=None)


def job_resources() -> dict[str, Any]:
    """The resources of the job running in this process (``{}`` outside a job), e.g.
    ``{"cores": 4, "estimate_s": 600}``: a program job runs on ``cores`` MPI ranks. Error
    corrections change them between attempts (see ``matdx.workflows.recover``)."""
    return dict(_RESOURCES.get() or {})


class TaskStatus:
    """What :func:`run_task` returns to the task farm."""

    COMPLETED = "completed"  # children in the same batch may start
    HELD = "held"  # completed, but its response changes the graph: children wait for a tick
    FAILED = "failed"
    SKIPPED = "skipped"  # a parent in the batch did not complete; nothing was run


_VERSIONED = ("matdx", "numpy", "scipy", "ase", "pymatgen", "h5py")
_versions: dict[str, str] | None = None


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries results depend on."""
    global _versions
    if _versions is None:
        found = {"python": platform.python_version()}
        for name in _VERSIONED:
            try:
                found[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        _versions = found
    return _versions


def _resolve_pending(spec: dict[str, Any]) -> bool:
    """Resolve references to parents that ran in the same batch; False if one did not complete."""
    outputs = {}
    for parent_id, parent_dir in spec["pending_parents"].items():
        try:
            result = read_result(parent_dir)
        except UntrustedRunDir:
            return False  # missing or unreadable: the tick harvests (and judges) the parent
        response = result.response or {}
        if result.status != "completed" or response.get("replace"):
            return False
        output = result.output
        for payload in _artifacts_of(output):
            payload["path"] = str(Path(parent_dir) / payload["path"])
        outputs[parent_id] = output
    spec["inputs"] = resolve_references(spec["inputs"], outputs)
    spec["pending_parents"] = {}
    spec["input_hash"] = input_hash(spec["function"], spec["inputs"])
    return True


def _artifacts_of(data: Any) -> list[dict[str, Any]]:
    from matdx.workflows.files import iter_artifacts

    return [p for p in iter_artifacts(data) if p.get("path") and not os.path.isabs(p["path"])]


def run_task(run_dir: str | Path) -> str:
    """Run the job in ``run_dir`` unless it already has a result; returns a :class:`TaskStatus`.

    Never raises for a failure of the job itself: the error, its traceback and any correction
    proposed by the code's error handlers go into ``result.json``.
    """
    run_dir = Path(run_dir).absolute()
    result_file = run_dir / RESULT_FILE
    if result_file.is_file():
        try:
            return _status_of(read_result(run_dir).model_dump())
        except UntrustedRunDir:
            return TaskStatus.FAILED  # the tick reports why
    spec = read_json(run_dir / JOB_FILE)
    if spec.get("pending_parents"):
        if not _resolve_pending(spec):
            return TaskStatus.SKIPPED
        write_json_atomic(run_dir / JOB_FILE, spec, durable=_durable())

    result: dict[str, Any] = {
        "schema_version": RESULT_SCHEMA_VERSION,
        "job_id": spec["job_id"],
        "attempt": spec["attempt"],
        "input_hash": spec["input_hash"],
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "versions": library_versions(),
        "started_at": time.time(),
        "output": None,
        "response": None,
        "error": None,
    }
    cwd = os.getcwd()
    os.chdir(run_dir)
    token = _RESOURCES.set(dict(spec.get("resources") or {}))
    try:
        function = load_function(spec["function"])
        args, kwargs = decode_inputs(spec["inputs"])
        value = function(*args, **kwargs)
        if isinstance(value, Response):
            result["output"] = value.encoded_output()
            result["response"] = value.to_dict()
        else:
            result["output"] = encode(value, path="output")
        result["status"] = "completed"
    except Exception as error:
        result["status"] = "failed"
        result["output"] = None
        result["response"] = None
        result["error"] = _describe(error)
    finally:
        _RESOURCES.reset(token)
        os.chdir(cwd)
    result["finished_at"] = time.time()
    try:
        checked = ResultFile.model_validate(result)
    except ValidationError as invalid:  # e.g. an error kind the protocol does not know
        result.update(status="failed", output=None, response=None,
                      error=_describe(ValueError(f"result.json: {invalid}")))
        checked = ResultFile.model_validate(result)
    write_json_atomic(result_file, checked.model_dump(mode="json"), durable=_durable())
    return _status_of(result)


def _durable() -> bool:
    """Whether this process fsyncs what it writes: not in a task farm's worker whose farm
    makes ``job.json`` and ``result.json`` durable itself, batched, before it reports the
    task's end (``matdx.hpc.farm``, ``Manifest.sync``)."""
    return os.environ.get(FARM_SYNCS) != "1"


def _describe(error: Exception) -> dict[str, Any]:
    """The error as JSON, with what error handlers attached to it (see ``matdx.codes``)."""
    lines = traceback.format_exception(error)
    correction = getattr(error, "correction", None)
    if correction is not None and hasattr(correction, "to_dict"):
        correction = correction.to_dict()
    try:
        correction = encode(correction, path="correction")
    except TypeError:
        correction = None
    return {
        "type": f"{type(error).__module__}.{type(error).__qualname__}",
        "message": str(error),
        "traceback": "".join(lines),
        "last_line": lines[-1].strip() if lines else repr(error),
        "kind": getattr(error, "kind", "program"),
        "correction": correction,
    }


def _status_of(result: dict[str, Any]) -> str:
    if result["status"] != "completed":
        return TaskStatus.FAILED
    response = result.get("response") or {}
    if response.get("detour") or response.get("replace") or response.get("stop_children"):
        return TaskStatus.HELD
    return TaskStatus.COMPLETED


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m matdx.workflows.run RUNDIR", file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    if not (run_dir / JOB_FILE).is_file():
        print(f"RUNDIR: no {JOB_FILE} in {run_dir}", file=sys.stderr)
        return 2
    status = run_task(run_dir)
    print(f"{run_dir}: {status}")
    return 0 if status in (TaskStatus.COMPLETED, TaskStatus.HELD) else 1


if __name__ == "__main__":
    sys.exit(main())
