"""The common job states every scheduler adapter maps its own states onto."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class BatchState(enum.StrEnum):
    """State of a batch job, common to all schedulers.

    ``QUEUED`` and ``RUNNING`` are active; every other state except ``UNKNOWN``
    is final. ``UNKNOWN`` means the scheduler no longer (or not yet) reports the
    job: the caller decides from the run directory what happened.
    """

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    CANCELLED = "cancelled"
    NODE_FAIL = "node_fail"
    UNKNOWN = "unknown"

    @property
    def is_active(self) -> bool:
        """True for QUEUED and RUNNING."""
        return self in (BatchState.QUEUED, BatchState.RUNNING)

    @property
    def is_final(self) -> bool:
        """True for every state a job never leaves (not active, not UNKNOWN)."""
        return not self.is_active and self is not BatchState.UNKNOWN


@dataclass(frozen=True)
class JobStatus:
    """What a poll learnt about one batch job.

    Attributes
    ----------
    job_id : str
        The scheduler's job id, as returned by ``submit``.
    state : BatchState
        The common state.
    exit_code : int or None
        Exit code of the batch script when the scheduler reports one.
    signal : int or None
        Signal that ended the batch script, when the scheduler reports one.
    reason : str
        Human-readable reason (pending reason, termination reason), may be empty.
    native_state : str
        The scheduler's own state string (``"TIMEOUT"``, ``"F"``, ``"EXIT"``, ``"qw"``).
    """

    job_id: str
    state: BatchState
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""
    native_state: str = ""


def signal_from_status(status: int) -> tuple[int | None, int | None]:
    """Split a raw ``wait(2)`` status into exit code and signal.

    Parameters
    ----------
    status : int
        Raw wait status (e.g. Slurm's ``squeue -O exit_code``): low 7 bits the
        signal, bits 8–15 the exit code.

    Returns
    -------
    tuple of (int or None, int or None)
        ``(exit_code, None)`` for a normal exit, ``(None, signal)`` when killed.

    Examples
    --------
    >>> signal_from_status(768)
    (3, None)
    >>> signal_from_status(15)
    (None, 15)
    """
    sig = status & 0x7F
    if sig:
        return None, sig
    return (status >> 8) & 0xFF, None
