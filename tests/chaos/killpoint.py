"""Run one tick (or one submit) and SIGKILL it at a named moment: the fault of the SIGKILL
family of the chaos suite.

Usage::

    python -m tests.chaos.killpoint STEP INDEX EVIDENCE (tick | submit)

``STEP`` is a tick step (``harvest``, ``recover``, ``expand``, ``release``, ``launch``) or
``submit``. Every store transaction of that step has three moments (before it begins, inside
it just before the commit, after the commit); the process kills itself with SIGKILL at moment
number ``INDEX`` of the step, after writing what it was about to do to ``EVIDENCE`` (fsynced).
A run that never reaches that moment exits 0 and writes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path

MOMENTS = ("before begin", "before commit", "after commit")


def main(argv: list[str]) -> int:
    target, index, evidence, mode = argv[0], int(argv[1]), Path(argv[2]), argv[3]
    from matdx.client import Client
    from matdx.store.store import Store
    from matdx.workflows import engine

    state = {"step": None, "count": 0}

    def moment(which: int) -> None:
        if state["step"] != target:
            return
        if state["count"] == index:
            record = {"step": target, "moment": index, "what": MOMENTS[which], "pid": os.getpid()}
            with open(evidence, "w") as handle:
                json.dump(record, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        state["count"] += 1

    original = Store.transaction

    @contextlib.contextmanager
    def transaction(self):
        moment(0)
        with original(self) as session:
            yield session
            moment(1)
        moment(2)

    Store.transaction = transaction

    def named(name, function):
        def step(*args, **kwargs):
            state["step"] = name
            try:
                return function(*args, **kwargs)
            finally:
                state["step"] = None
        return step

    for name in ("harvest", "recover", "expand", "release", "launch"):
        setattr(engine, name, named(name, getattr(engine, name)))
    client = Client(os.environ["MATDX_HOME"])
    if mode == "submit":
        from tests.chaos.campaigns import small_campaign

        named("submit", client.submit)(small_campaign(Path(os.environ["MATDX_HOME"])))
    else:
        client.tick(wait_s=60)
    client.store.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
