"""Helpers of the tests that use the real single-node Grid Engine test cluster."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SGE_SCRIPT = REPO / "hpc" / "testcluster" / "sge.sh"
QUEUE = "all.q"
START_HINT = (
    "the Grid Engine test cluster is not running; start it (as root) with\n"
    f"    bash {SGE_SCRIPT.relative_to(REPO)} start --slots 8\n"
    "and check it with\n"
    f"    bash {SGE_SCRIPT.relative_to(REPO)} status"
)


def require_sge_cluster(min_slots: int = 1) -> int:
    """Fail (never skip) unless queue all.q accepts jobs; return its number of slots.

    ``qstat -g c`` lists each cluster queue with its AVAIL and TOTAL slots and the
    slots in states a(larm), o(rphaned), A, C, D, S and c, d, s, u, E (disabled,
    unknown, error); a queue that accepts jobs has TOTAL > 0 and none disabled.
    """
    if shutil.which("qstat") is None:
        pytest.fail(f"Grid Engine commands are not installed. {START_HINT}")
    try:
        proc = subprocess.run(["qstat", "-g", "c"], capture_output=True, text=True,
                              timeout=20, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"qstat did not answer within 20 s. {START_HINT}")
    if proc.returncode != 0:
        pytest.fail(f"qstat failed ({proc.stderr.strip() or proc.stdout.strip()}). {START_HINT}")
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(QUEUE + " ")]
    if not rows:
        pytest.fail(f"qstat -g c lists no queue {QUEUE}: {proc.stdout!r}. {START_HINT}")
    # CLUSTER QUEUE  CQLOAD  USED  RES  AVAIL  TOTAL  aoACDS  cdsuE
    total, unusable = int(rows[0][5]), int(rows[0][7])
    if unusable or total == 0:
        pytest.fail(f"queue {QUEUE} is not usable ({unusable} of {total} slots disabled or in "
                    f"error). {START_HINT}")
    if total < min_slots:
        pytest.fail(f"queue {QUEUE} has {total} slots, these tests need {min_slots}. "
                    f"{START_HINT}")
    return total


def sge_slots() -> int:
    """Slots of all.q in the running cluster (for fixtures that need the number)."""
    return require_sge_cluster()
