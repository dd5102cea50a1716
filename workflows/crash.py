"""Why a job's process, or its task farm, ended without writing a result.

A job that raises writes its error into ``result.json`` and needs no help. A process that
dies instead (killed by a signal, out of memory, a result that could not be written) leaves
only the farm's one-line status and a log: this module turns those into the reason a user
reads in ``matdx status`` and ``matdx run``, e.g.

    the job's process was killed by SIGKILL (signal 9) before it wrote result.json: out of
    memory, or killed by hand?

instead of "worker process died: crashed: worker exit code -9".
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

__all__ = ["crash_reason", "last_error_line"]

TAIL_BYTES = 64 * 1024  # how much of a log's end is read
# The last line of a Python traceback: "ValueError: ...", "numpy.linalg.LinAlgError: ...".
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|"
                             r"Interrupt|Warning|Failure|Failed)\b(?::.*)?$")
_EXIT_CODE = re.compile(r"^crashed: (?:worker|task process) exit code (-?\d+)(?::\s*(.*))?$")

_SIGNAL_HINTS = {
    signal.SIGKILL: "out of memory, or killed by hand?",
    signal.SIGSEGV: "a crash inside compiled code (a library or program bug)",
    signal.SIGBUS: "a crash inside compiled code, or a file it mapped vanished",
    signal.SIGABRT: "a library aborted (see the log for its message)",
    signal.SIGTERM: "stopped by someone or something (scheduler, shutdown)",
}


def last_error_line(log: str | Path, *, any_line: bool = False) -> str | None:
    """The last exception line of a log (``ValueError: ...``); with ``any_line``, else its
    last non-empty line. None if there is none. Reads at most the last 64 KiB."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - TAIL_BYTES))
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line[:500]
    return lines[-1][:500] if lines and any_line else None


def crash_reason(farm_status: str, logs: list[Path] | tuple[Path, ...] = ()) -> str:
    """The reason, in words, for a task the farm reported as ``farm_status`` and that left no
    ``result.json``; ``logs`` are searched, in order, for the error the process printed.

    Parameters
    ----------
    farm_status
        The farm's ``end`` status, e.g. ``"crashed: worker exit code -9"`` or
        ``"crashed: ValueError: Out of range float values are not JSON compliant"``.
    logs
        Log files the process wrote to (its task log, the farm's log).
    """
    status = farm_status.strip()
    exited = _EXIT_CODE.match(status)
    if exited:
        code = int(exited.group(1))
        printed = next((line for line in map(last_error_line, logs) if line), None)
        printed = printed or (exited.group(2) or "").strip() or None
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            hint = _SIGNAL_HINTS.get(-code, "")
            reason = (f"the job's process was killed by {name} (signal {-code}) before it wrote "
                      "result.json")
            reason += f": {hint}" if hint else ""
        else:
            reason = f"the job's process exited with code {code} before it wrote result.json"
        return f"{reason}; last error: {printed}" if printed and printed != "no output" \
            else reason
    if status.startswith("crashed: "):
        # run_task itself raised: the job ran, but its result could not be written.
        return f"the job ran but matdx could not write its result: {status[len('crashed: '):]}"
    return f"the job's process ended without a result (farm status {status or 'unknown'!r})"
