"""When a batch-queue executor last asked its scheduler, remembered across tick processes.

Cron starts every tick as a new process, so the minimum interval between scheduler queries
(the site profile's ``min_poll_interval``) needs state that outlives the process. It lives in a
small JSON file per executor under ``$MATDX_HOME/executors/`` rather than in the store:

* it is a cache of the executor, not campaign data: losing it costs one extra query, never a
  result, so it needs neither a schema migration nor a transaction;
* ticks of one store are serialised by the tick lock, so the file has one writer at a time,
  and it is replaced atomically, so a reader never sees half of it;
* with a PostgreSQL store shared by ticks on several login nodes, each node keeps its own
  file, which at worst polls once per node per interval.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["PollState"]


class PollState:
    """The time of an executor's last scheduler query.

    Parameters
    ----------
    path
        The state file (created on the first :meth:`record`).
    min_interval_s
        Shortest time between two queries, s.
    clock
        Returns the current Unix time, s (tests pass a fake clock).
    """

    def __init__(
        self, path: str | Path, min_interval_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path)
        self.min_interval_s = float(min_interval_s)
        self._clock = clock

    def last(self) -> float | None:
        """Unix time of the last recorded query, or None (never, or an unreadable file)."""
        try:
            value = json.loads(self.path.read_text())["last_poll"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return float(value) if isinstance(value, int | float) else None

    def due(self) -> bool:
        """Whether the minimum interval has passed since the last query (a clock that went
        backwards counts as due)."""
        last = self.last()
        if last is None:
            return True
        elapsed = self._clock() - last
        return elapsed < 0 or elapsed >= self.min_interval_s

    def wait_s(self) -> float:
        """Seconds until the next query is allowed (0 when it is due)."""
        last = self.last()
        if last is None or self.due():
            return 0.0
        return max(0.0, self.min_interval_s - (self._clock() - last))

    def record(self) -> None:
        """Remember that the scheduler was queried now."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump({"last_poll": self._clock()}, handle)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
