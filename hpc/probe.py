"""The probe job of ``matdx hpc check``: does matdx start in a site's real batch environment?

:func:`probe_site` submits a one-task batch job through the site's adapter, with the
profile's modules, environment, pre_commands and Python, exactly as a batch of the engine
would run, waits for it and reads its output. The job runs ``python -m matdx.hpc.probe``
(:func:`main`), which reports, one ``matdx-probe:`` line each, whether matdx and mpi4py
import, whether the MPI launcher starts a rank, and whether each of the profile's
``programs`` starts. When even Python or matdx cannot start, the job's output says why (read
by :func:`matdx.hpc.startup.startup_cause`) and that is the finding.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matdx.hpc.errors import HPCError
from matdx.hpc.scheduler import Scheduler
from matdx.hpc.sites import SiteProfile
from matdx.hpc.startup import output_cause, read_tail
from matdx.hpc.status import JobStatus

__all__ = ["PREFIX", "ProbeFinding", "main", "probe_site"]

PREFIX = "matdx-probe:"
#: Longest time one probed program may run, s.
PROGRAM_TIMEOUT_S = 20.0
#: Exit codes of a shell for a program that could not be started.
_NOT_STARTED = {126: "not executable", 127: "not found or a library is missing"}


@dataclass(frozen=True)
class ProbeFinding:
    """One finding of the probe job: ``status`` is ``pass`` or ``fail``."""

    name: str
    status: str
    detail: str


# ------------------------------------------------------------------ on the compute node


def _say(name: str, ok: bool, detail: str) -> None:
    detail = " ".join(detail.split())
    print(f"{PREFIX} {name} {'pass' if ok else 'fail'} {detail}", flush=True)


def _try_import(module: str) -> tuple[bool, str]:
    try:
        imported = importlib.import_module(module)
    except Exception as error:
        return False, f"{type(error).__name__}: {error}"
    return True, f"{getattr(imported, '__version__', '')} from {getattr(imported, '__file__', '')}"


def _try_start(argv: list[str]) -> tuple[bool, str]:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=PROGRAM_TIMEOUT_S, check=False)
    except FileNotFoundError:
        return False, f"{argv[0]} not found"
    except PermissionError:
        return False, f"{argv[0]} is not executable"
    except subprocess.TimeoutExpired:
        return True, f"{argv[0]} started (still running after {PROGRAM_TIMEOUT_S:.0f} s)"
    if done.returncode in _NOT_STARTED or done.returncode < 0:
        tail = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()[-1:]
        why = _NOT_STARTED.get(done.returncode, f"killed by signal {-done.returncode}")
        return False, f"{' '.join(argv)}: {why} {' '.join(tail)}"
    return True, f"{shutil.which(argv[0]) or argv[0]} started (exit {done.returncode})"


def main(argv: list[str] | None = None) -> int:
    """Report what starts here (run inside the probe job)."""
    parser = argparse.ArgumentParser(prog="python -m matdx.hpc.probe")
    parser.add_argument("--launcher", required=True,
                        help="the MPI launcher's command line for one rank, shell-quoted")
    parser.add_argument("--program", action="append", default=[])
    args = parser.parse_args(argv)
    print(f"{PREFIX} python pass {sys.executable} {sys.version.split()[0]}", flush=True)
    _say("matdx", *_try_import("matdx"))
    ok, detail = _try_import("mpi4py")
    _say("mpi4py", ok, detail if ok else f"{detail} (the MPI farm needs it: install it in "
         f"{sys.executable}'s environment or load the module that provides it)")
    _say("mpi-launcher", *_try_start([*shlex.split(args.launcher), sys.executable, "-c", "pass"]))
    for program in args.program:
        _say(f"program:{program}", *_try_start([program]))
    return 0


# ------------------------------------------------------------------ on the login node


def parse_findings(text: str) -> list[ProbeFinding]:
    """The ``matdx-probe:`` lines of the probe job's output."""
    findings = []
    for line in text.splitlines():
        if line.startswith(PREFIX):
            name, status, *detail = line[len(PREFIX):].split(maxsplit=2)
            findings.append(ProbeFinding(name, status, detail[0] if detail else ""))
    return findings


def probe_site(
    site: SiteProfile,
    adapter: Scheduler,
    *,
    directory: Path | None = None,
    timeout_s: float = 300.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[ProbeFinding]:
    """Submit the probe job, wait for it and return its findings.

    Parameters
    ----------
    directory
        Where the script and output go (a new directory under the site's scratch by
        default; the compute node must see it).
    timeout_s
        Longest wait for the job, s; it is cancelled after that.

    Raises
    ------
    HPCError
        When the job cannot be submitted or does not end in time.
    """
    directory = directory or site.scratch_path() / f"matdx-probe-{uuid.uuid4().hex[:12]}"
    directory.mkdir(parents=True, exist_ok=True)
    python = site.python or sys.executable
    command = [python, "-m", "matdx.hpc.probe", "--launcher", shlex.join(site.mpi.argv(1))]
    for program in site.programs:
        command += ["--program", program]
    resources = site.resources(
        job_name="matdx-probe", walltime=max(60, int(timeout_s)), ranks_per_node=1,
        working_directory=directory, output=directory / "probe.out",
    )
    script = adapter.write_script(resources, [command], directory / "probe.sh")
    job_id = adapter.submit(script)
    deadline = time.monotonic() + timeout_s
    status: JobStatus | None = None
    while True:
        status = adapter.poll([job_id]).get(job_id)
        if status is not None and status.state.is_final:
            break
        if time.monotonic() > deadline:
            adapter.cancel([job_id])
            raise HPCError(f"probe job {job_id} did not end within {timeout_s:.0f} s "
                           f"(state {status.state if status else 'unknown'}); cancelled")
        sleep(max(1.0, float(site.min_poll_interval)))
    output = directory / "probe.out"
    findings = parse_findings(read_tail(output))
    if findings and all(f.status == "pass" for f in findings):
        shutil.rmtree(directory, ignore_errors=True)
    if not any(f.name == "matdx" for f in findings):
        cause = output_cause(output, placeholders=[(str(directory), "PROBE_DIR")])
        findings.append(ProbeFinding(
            "matdx", "fail",
            f"the probe job ({job_id}, {status.native_state or status.state}) did not start "
            f"matdx with {python}: {cause or 'no output'} (see {output})",
        ))
    return findings


if __name__ == "__main__":
    sys.exit(main())
