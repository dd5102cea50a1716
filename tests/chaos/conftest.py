"""The fault suite's ledger: every trial records its fault, the evidence that the fault really
fired, and what survived; the session ends with one table (also in the README's reliability
section). ``MATDX_CHAOS_FULL=1`` runs the issue's full counts; the default is CI size."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

import pytest

FULL = os.environ.get("MATDX_CHAOS_FULL") == "1"


@dataclass
class FaultRow:
    trials: int = 0
    fired: int = 0  # trials with evidence that the fault happened
    survived: int = 0
    lost: int = 0
    duplicated: int = 0
    stuck: int = 0
    evidence: set[str] = field(default_factory=set)


LEDGER: dict[str, FaultRow] = defaultdict(FaultRow)


class Ledger:
    """What a chaos test reports for each trial."""

    def trial(self, fault: str, *, evidence: str | None, survived: bool, lost: int = 0,
              duplicated: int = 0, stuck: int = 0) -> None:
        row = LEDGER[fault]
        row.trials += 1
        if evidence:  # a trial without evidence that its fault fired counts as not run
            row.fired += 1
            row.evidence.add(evidence.split(":")[0][:60])
            row.survived += int(survived)
        row.lost += lost
        row.duplicated += duplicated
        row.stuck += stuck


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


def pytest_terminal_summary(terminalreporter) -> None:
    if not LEDGER:
        return
    write = terminalreporter.write_line
    write("")
    write(f"matdx fault suite ({'full' if FULL else 'CI size'}; MATDX_CHAOS_FULL=1 for full)")
    header = f"{'fault':<44} {'trials':>7} {'fired':>7} {'survived':>9} {'lost':>5} " \
             f"{'dup':>4} {'stuck':>6}"
    write(header)
    write("-" * len(header))
    for fault, row in sorted(LEDGER.items()):
        write(f"{fault:<44} {row.trials:>7} {row.fired:>7} {row.survived:>9} {row.lost:>5} "
              f"{row.duplicated:>4} {row.stuck:>6}")
