"""Failure kinds and their retry budgets, defined in this one place.

Every failed attempt is diagnosed as one of five kinds (the diagnosis comes from the code's
error handlers in ``matdx.codes``, which name the same five strings):

``input``
    The science setup is wrong for the system (smearing for a metal, symmetry tolerance,
    too few bands, a k-mesh the program refuses). Rerunning unchanged fails again; only a
    correction helps.
``numerical``
    Convergence: the SCF or the ionic loop did not converge, a matrix was not positive
    definite. Only a correction helps.
``resources``
    Memory, walltime, ranks. The next attempt gets more resources (or restarts from where the
    run stopped).
``program``
    The program (or a plain Python job) crashed for a reason no handler recognised. Rerun
    while the job's own ``retries`` last: some crashes are transient.
``infrastructure``
    The node, the filesystem or the scheduler failed. Rerun unchanged: the attempt was lost,
    not wrong.

Each kind has a :class:`Budget`: how many corrections of that kind one job may receive, and
how many unchanged reruns a failure of that kind without a correction may have. Recover
(:mod:`matdx.workflows.recover`) applies them; the durability work (requeues after a lost
node) counts against the ``infrastructure`` budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["BUDGETS", "KINDS", "Budget", "FailureKind", "kind_of"]

FailureKind = Literal["input", "numerical", "resources", "program", "infrastructure"]
KINDS: tuple[str, ...] = ("input", "numerical", "resources", "program", "infrastructure")


@dataclass(frozen=True)
class Budget:
    """The retry budget of one failure kind, per job.

    Attributes
    ----------
    corrections : int
        Corrections of this kind one job may receive (each also limited by its handler's own
        ``max_corrections``).
    reruns : int or None
        Unchanged new attempts after a failure of this kind that has no correction; ``None``
        means the job's own ``retries`` setting.
    """

    corrections: int
    reruns: int | None


BUDGETS: dict[str, Budget] = {
    "input": Budget(corrections=4, reruns=0),
    "numerical": Budget(corrections=6, reruns=0),
    "resources": Budget(corrections=4, reruns=1),
    "program": Budget(corrections=2, reruns=None),
    "infrastructure": Budget(corrections=5, reruns=5),
}

# Kind strings written by earlier versions of the job runner and harvest.
_LEGACY = {"science": "program"}


def kind_of(error: dict[str, Any] | None) -> str:
    """The failure kind of an attempt's error dict (``{"kind": ...}``).

    A missing or unknown kind (a plain Python exception in a job, an older run directory) is
    ``"program"``: the crash of something no handler diagnosed.
    """
    kind = (error or {}).get("kind")
    kind = _LEGACY.get(kind, kind)
    return kind if kind in KINDS else "program"
