"""PostgreSQL stopped in the middle of a campaign and restarted.

The store's own PostgreSQL server (:class:`matdx.store.pgserver.TemporaryPostgres`, durable as
a site's server is) is stopped with ``pg_ctl stop -m immediate`` (processes quit at once; the
restart recovers from the WAL, as after a crash) or ``-m fast`` (sessions are ended) from
inside a running tick: at a seeded moment around one of the store transactions of a named tick
step (before it begins, just before its commit, just after its commit), e.g. between harvest's
reading of a batch and its recording of the results. The local task farms keep running
meanwhile, as a site's batch jobs do.

A trial's evidence is the error the tick met when its connection dropped (psycopg's message)
and the server log's line for the shutdown; a trial without both counts as not run. The
server is then restarted: the next tick must complete without an error, and after all trials
the campaign is run to its end and ARCHITECTURE.md's invariants are checked (0 lost, 0
duplicated, 0 stuck, ``matdx store verify`` clean).
"""

from __future__ import annotations

import contextlib
import random

import pytest
from sqlalchemy.exc import InterfaceError, OperationalError

from matdx.client import Client
from matdx.store.pgserver import PostgresNotInstalled, TemporaryPostgres
from matdx.store.store import Store
from matdx.workflows import engine
from matdx.workflows.executors.local import LocalExecutor
from tests.chaos.campaigns import DONE_JOBS, small_campaign
from tests.chaos.conftest import FULL
from tests.chaos.test_sigkill import tally
from tests.conftest import _stop_farms, matdx_cli

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

STEPS = ("harvest", "recover", "expand", "release", "launch")
MOMENTS = ("before begin", "before commit", "after commit")
ROUNDS = 3 if FULL else 1  # each round stops the server once per step and mode
SEED = 20261208


class Outage:
    """Stops the server at moment ``index`` of the store transactions of tick step ``step``."""

    def __init__(self, server: TemporaryPostgres, mode: str, step: str, index: int) -> None:
        self.server, self.mode, self.step, self.index = server, mode, step, index
        self.current: str | None = None
        self.count = 0
        self.fired: str | None = None

    def moment(self, which: int) -> None:
        if self.fired is not None or self.current != self.step:
            return
        if self.count == self.index:
            self.server.halt(self.mode)
            self.fired = f"{self.step} {MOMENTS[which]} (moment {self.index})"
        self.count += 1

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = Store.transaction

        @contextlib.contextmanager
        def transaction(store):
            self.moment(0)
            with original(store) as session:
                yield session
                self.moment(1)
            self.moment(2)

        monkeypatch.setattr(Store, "transaction", transaction)
        for name in STEPS:
            monkeypatch.setattr(engine, name, self._named(name, getattr(engine, name)))

    def _named(self, name, function):
        def step(*args, **kwargs):
            self.current = name
            try:
                return function(*args, **kwargs)
            finally:
                self.current = None
        return step


def dropped(client: Client) -> BaseException | None:
    """Tick once; the store error it met, if any."""
    try:
        engine.tick(client.store, executors=client.executors)
    except (OperationalError, InterfaceError) as error:
        return error
    return None


def outage(client, server, monkeypatch, mode: str, step: str, index: int) -> str | None:
    """One trial: tick until the server stops at the named moment (at most 5 ticks), capture
    the dropped connection, restart the server; returns the evidence or None."""
    fault = Outage(server, mode, step, index)
    with monkeypatch.context() as patch:
        fault.install(patch)
        for _ in range(5):
            error = dropped(client)
            if fault.fired is not None:
                break
            assert error is None, f"the store failed before the fault: {error}"
    if fault.fired is None:
        return None
    if error is None:  # stopped after the tick's last commit: the next tick meets it
        error = dropped(client)
    logged = f"received {mode} shutdown request" in server.log_file.read_text()
    server.resume()
    assert dropped(client) is None, "the first tick after the restart failed"
    if error is None or not logged:
        return None
    message = str(getattr(error, "orig", error)).strip().splitlines()[0]
    return f"{mode} stop {fault.fired}: {type(error).__name__}: {message}"


@pytest.mark.timeout(1800)
def test_postgres_stopped_mid_campaign_and_restarted(tmp_path, monkeypatch, ledger):
    try:
        server = TemporaryPostgres(durable=True).start()
    except PostgresNotInstalled as missing:
        pytest.fail(f"this test needs a PostgreSQL server: {missing}", pytrace=False)
    home = tmp_path / "home"
    url = server.create_database("chaos")
    monkeypatch.setenv("MATDX_HOME", str(home))
    monkeypatch.setenv("MATDX_STORE", url)
    client = Client(home, executors={"local": LocalExecutor(workers=2)})
    rng = random.Random(SEED)
    trials: list[tuple[str, str | None]] = []
    try:
        client.submit(small_campaign(home))
        for _ in range(ROUNDS):
            for step in STEPS:
                for mode in ("immediate", "fast"):
                    evidence = outage(client, server, monkeypatch, mode, step, rng.randrange(3))
                    trials.append((f"PostgreSQL stopped ({mode}) mid-tick", evidence))
        client.store.dispose()
        final = matdx_cli("run", "--poll", "0.1", timeout=600,
                          env={"MATDX_HOME": str(home), "MATDX_STORE": url})
        counts = tally(home)
        verify = matdx_cli("store", "verify", env={"MATDX_HOME": str(home), "MATDX_STORE": url})
    finally:
        client.store.dispose()
        _stop_farms(home)
        server.stop()
    survived = (final.returncode == 0 and verify.returncode == 0 and counts["jobs"] == DONE_JOBS
                and not (counts["lost"] or counts["duplicated"] or counts["stuck"]))
    for fault, evidence in trials:
        ledger.trial(fault, evidence=evidence, survived=survived, lost=counts["lost"],
                     duplicated=counts["duplicated"], stuck=counts["stuck"])
    print("\n".join(f"{fault}: {evidence}" for fault, evidence in trials))
    assert survived, (counts, final.stdout[-3000:], final.stderr[-3000:], verify.stdout)
    # a stop whose moment never came (the campaign was past that step) is not run
    assert sum(1 for _, evidence in trials if evidence) >= 0.8 * len(trials), trials
