"""Monitors: watch a running program from the compute side and act before it wastes its time.

:func:`~matdx.codes.execution.execute` asks each monitor every ``poll_s`` seconds (about one
second) whether to act, while the program runs. A monitor reads only the run directory, never
the store, so it works inside a batch allocation. It returns an :class:`Action`:

- ``stop=True``: the program is killed now (its process group gets SIGTERM, then SIGKILL);
  the execution record names the monitor and its reason, and the code's error handlers read
  that afterwards to choose the correction (a frozen run is rerun, a diverging SCF gets
  slower mixing).
- ``stop=False``: the monitor asked the program to stop cleanly by itself (for example
  Quantum ESPRESSO's ``PREFIX.EXIT`` file before the walltime runs out), and the program
  keeps running until it does; the request is recorded too.

Each code module chooses its monitors (``Template.monitors``); the generic ones live here.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

__all__ = ["Action", "FrozenOutput", "Monitor", "StopFileBeforeLimit", "clean_stop_margin"]


def clean_stop_margin(limit_s: float) -> float:
    """Seconds before a time limit of ``limit_s`` seconds at which a program is asked to stop
    cleanly: 10 % of the limit, at least 3 s and at most 10 min."""
    return min(max(0.1 * float(limit_s), 3.0), 600.0)


@dataclass(frozen=True)
class Action:
    """What a monitor did.

    Attributes
    ----------
    monitor
        The monitor's name (``frozen_output``, ``walltime_approaching``, ``scf_diverging``).
    reason
        One sentence, kept in ``execution.json``.
    stop
        True: kill the program now. False: the program was asked to stop by itself.
    elapsed_s
        Seconds since the program started when the monitor acted.
    """

    monitor: str
    reason: str
    stop: bool
    elapsed_s: float = 0.0


class Monitor(ABC):
    """Watches one running program; :meth:`check` is called about once a second."""

    name: ClassVar[str]

    @abstractmethod
    def check(self, directory: Path, elapsed_s: float) -> Action | None:
        """What to do now, or None to let the program run.

        Parameters
        ----------
        directory
            The run directory.
        elapsed_s
            Seconds since the program started.
        """


class FrozenOutput(Monitor):
    """Kill a program whose output files have not changed for ``stall_s`` seconds.

    A hung MPI rank, a deadlocked library or a stuck file system leaves a program alive and
    silent until the walltime kills it; this stops it early so the retry starts at once.

    Parameters
    ----------
    files
        Output files, relative to the run directory; a change of size or modification time of
        any of them counts as progress. Files that do not exist yet count as unchanged.
    stall_s
        Seconds without a change after which the program is killed.
    """

    name = "frozen_output"

    def __init__(self, files: Sequence[str], stall_s: float) -> None:
        if not stall_s > 0:
            raise ValueError(f"stall_s={stall_s!r}: must be a positive number of seconds")
        self.files = tuple(files)
        self.stall_s = float(stall_s)
        self._seen: tuple[tuple[int, int], ...] | None = None
        self._changed_at = 0.0

    def _state(self, directory: Path) -> tuple[tuple[int, int], ...]:
        state = []
        for name in self.files:
            try:
                info = os.stat(directory / name)
            except OSError:
                state.append((-1, -1))
            else:
                state.append((info.st_size, info.st_mtime_ns))
        return tuple(state)

    def check(self, directory: Path, elapsed_s: float) -> Action | None:
        state = self._state(Path(directory))
        if state != self._seen:
            self._seen, self._changed_at = state, elapsed_s
            return None
        silent = elapsed_s - self._changed_at
        if silent < self.stall_s:
            return None
        return Action(
            self.name,
            f"no change in {', '.join(self.files)} for {silent:.0f} s "
            f"(limit {self.stall_s:.0f} s): the program looks frozen",
            stop=True,
            elapsed_s=elapsed_s,
        )


class StopFileBeforeLimit(Monitor):
    """Ask a program to stop cleanly before its time limit runs out.

    Programs that poll for a stop file (Quantum ESPRESSO's ``PREFIX.EXIT``, CP2K's
    ``PROJECT.EXIT``, VASP's ``STOPCAR``) then write their restart files and end on their own,
    so the next attempt continues instead of starting over after a kill. The file is written
    once, when the time left is below the larger of ``margin_s`` and three times the longest
    step so far (``step_s``; custodian's VASP walltime rule), so a slow step still ends in
    time.

    Parameters
    ----------
    limit_s
        The time limit of the run, in seconds.
    margin_s
        Least seconds before the limit at which the stop file is written; the program needs
        them to finish its current step and write its restart files.
    stop_file
        Name of the stop file, relative to the run directory.
    content
        Text of the stop file (VASP reads ``LSTOP = .TRUE.``; the others only test that the
        file exists).
    step_s
        Reads the run directory and returns the longest step so far in seconds (0 when none
        finished yet), or None to use ``margin_s`` alone.
    """

    name = "walltime_approaching"

    def __init__(
        self,
        limit_s: float,
        margin_s: float,
        stop_file: str,
        content: str = "stop requested by matdx: the time limit is near\n",
        step_s: Callable[[Path], float] | None = None,
    ) -> None:
        if not limit_s > 0 or not margin_s >= 0:
            raise ValueError(
                f"limit_s={limit_s!r}, margin_s={margin_s!r}: need a positive limit and a "
                "margin of zero or more seconds"
            )
        if Path(stop_file).is_absolute() or ".." in Path(stop_file).parts:
            raise ValueError(f"stop_file={stop_file!r}: must be a name inside the run directory")
        self.limit_s = float(limit_s)
        self.margin_s = float(margin_s)
        self.stop_file = stop_file
        self.content = content
        self.step_s = step_s
        self._asked = False

    def margin(self, directory: Path) -> float:
        """Seconds before the limit at which to ask: ``margin_s`` or three of the longest
        steps so far, whichever is larger."""
        step = self.step_s(Path(directory)) if self.step_s is not None else 0.0
        return max(self.margin_s, 3.0 * step)

    def check(self, directory: Path, elapsed_s: float) -> Action | None:
        if self._asked:
            return None
        left = self.limit_s - elapsed_s
        if left > self.margin(directory):
            return None
        self._asked = True
        path = Path(directory) / self.stop_file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.content)
        return Action(
            self.name,
            f"{left:.0f} s of the {self.limit_s:.0f} s limit left: asked "
            f"the program to stop cleanly ({self.stop_file})",
            stop=False,
            elapsed_s=elapsed_s,
        )
