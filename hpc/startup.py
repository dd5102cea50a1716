"""Why a batch job died before its task farm started, read from the job's output file.

The most common failure of a new HPC user is an environment that cannot start matdx on the
compute nodes: a module not loaded, a virtualenv not active there, the wrong Python. Every
batch job then dies at once with the same message in its output (``batch.out``), e.g.
``ModuleNotFoundError: No module named 'mpi4py'``. :func:`startup_cause` finds that message,
so that the engine can say it once and stop submitting, instead of requeueing the jobs.

The cause is normalised so that two batch jobs with the same problem give the same text: the
batch directory and the job id are replaced by placeholders.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = ["FIX_HINT", "MAX_READ_BYTES", "output_cause", "read_tail", "startup_cause"]

#: Most bytes read from the end of a batch job's output.
MAX_READ_BYTES = 64 * 1024
#: Longest cause kept, characters.
MAX_CAUSE_CHARS = 300

#: How to fix a broken batch environment (appended to the engine's message).
FIX_HINT = (
    "the batch environment cannot start matdx: load the missing module or activate the "
    "Python environment in the site profile (modules, pre_commands, python), check it with "
    "`matdx hpc check {site}`, then `matdx rerun --failed CAMPAIGN`"
)

# In order of preference: the first pattern with a match wins, and of its matches the last.
_PATTERNS = (
    # a Python exception line ends a traceback: "ModuleNotFoundError: No module named 'x'"
    re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit)\b(?::.*)?$"),
    # shells and environment modules (Lmod, Tcl modules)
    re.compile(r".*(?:command not found|No such file or directory|Permission denied).*"),
    re.compile(r".*(?:Unable to locate a modulefile|module\(s\) are unknown|"
               r"ModuleCmd_Load|module: not found|Lmod has detected the following error).*",
               re.IGNORECASE),
    re.compile(r".*\berror\b.*", re.IGNORECASE),
)
# Lines a scheduler or MPI launcher adds that never name the cause.
_NOISE = re.compile(
    r"^(?:-{5,}|\*{3}.*\*{3}|slurmstepd:.*CANCELLED.*|Primary job\b.*|mpirun\b.*|"
    r"prterun\b.*|Process name:.*|Exit code:.*)$"
)


def read_tail(path: str | os.PathLike[str], limit: int = MAX_READ_BYTES) -> str:
    """The last ``limit`` bytes of a text file, decoded leniently ('' when unreadable).

    Only a regular file is read: a batch job's output is written by the job, so it is not
    trusted to be one.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block
    except OSError:
        return ""
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            return ""
        os.lseek(descriptor, max(0, info.st_size - limit), os.SEEK_SET)
        return os.read(descriptor, limit).decode("utf-8", errors="replace")
    except OSError:
        return ""
    finally:
        os.close(descriptor)


def startup_cause(text: str, *, placeholders: Iterable[tuple[str, str]] = ()) -> str | None:
    """The line of a batch job's output that says why it failed, normalised; None when none.

    Parameters
    ----------
    text
        The output (its tail is enough).
    placeholders
        ``(text, placeholder)`` pairs replaced in the cause, e.g. the batch directory by
        ``BATCH_DIR`` and the job id by ``JOB_ID``, so that the same problem in two batch jobs
        gives the same cause.
    """
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not _NOISE.match(line)]
    for pattern in _PATTERNS:
        found = [line for line in lines if pattern.fullmatch(line)]
        if found:
            cause = found[-1]
            break
    else:
        return None
    for value, placeholder in placeholders:
        if value:
            cause = cause.replace(value, placeholder)
    cause = "".join(ch if ch.isprintable() else "?" for ch in cause)
    return cause[:MAX_CAUSE_CHARS]


def output_cause(path: str | Path, *, placeholders: Iterable[tuple[str, str]] = ()) -> str | None:
    """:func:`startup_cause` of the file at ``path`` (None when it is missing or says nothing)."""
    return startup_cause(read_tail(path), placeholders=placeholders)
