"""Engine throughput: campaigns of trivial jobs on the local executor and the SQLite store.

    python benchmarks/engine.py                 # N = 100, 1,000, 10,000; three shapes
    python benchmarks/engine.py --peers --large 100000   # + fan-out and chain at 100,000
    python benchmarks/engine.py --sizes 100 1000 --repeats 3 --peers
    python benchmarks/engine.py --sizes 100 --executor fireworks

For each shape (fan-out: N independent jobs; chain: N jobs each using the previous one's
output; fan-out + gather: N jobs and one that sums them) and size, it submits the campaign
to one store, ticks (``Client.run``) until the last record is stored, and prints
milliseconds per job counted from submit to the last result (median over repeats), the
number of ticks and their median time, and the time from a dependent job's last parent's end
to its start (median and 99th percentile, from the jobs' own ``result.json``), with
the machine's load beside every line, and the CPU time per job of the ticking process plus
the warm pool and its workers (wall times mean little on a loaded machine). Every state
change is committed to the store (SQLite, WAL) and every ``job.json``/``result.json`` is
made durable (fsync, batched). The local executor's warm pool is started once by a warm-up
campaign and reused. With ``--peers`` it runs the same shapes with Parsl's high-throughput
executor (started once, reused; N <= 10,000), jobflow (in memory, nothing persisted) and
FireWorks (on mongomock; N <= 1,000) when installed, in the same run, and prints each peer's
time per job and its ratio to matdx's (above 1: matdx is faster). With ``--executor
fireworks`` it also runs each campaign (N <= 1000) through matdx's fireworks executor on a
LaunchPad in FireWorks' mongomock mode (ticks and ``rapidfire`` in turn, in this process)
and prints its per-job time beside the native (local) executor's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE),
                                                        os.environ.get("PYTHONPATH")]))

SHAPES = ("fan-out", "chain", "fan-out+gather")


def matdx_graph(shape: str, n: int, executor: dict | None = None):
    from trivial import gather, increment

    from matdx.workflows import Flow
    from matdx.workflows.submit import CampaignGraph

    if shape == "chain":
        jobs = [increment(0)]
        for _ in range(n - 1):
            jobs.append(increment(jobs[-1].output))
    else:
        jobs = [increment(i) for i in range(n)]
        if shape == "fan-out+gather":
            jobs.append(gather([j.output for j in jobs]))
    return CampaignGraph(f"bench-{shape}-{n}", [("bench", Flow(jobs))],
                         executor or {"type": "local", "workers": 2}, {})


@dataclass
class MatdxRun:
    """One campaign through matdx."""

    seconds: float  # submit to the last record stored
    ticks: int
    tick_s: float  # median duration of a tick
    latencies_s: list[float]  # parent's end to dependent's start, per edge
    cpu_s: float  # CPU time of this (ticking) process and of the warm pool with its workers


class MatdxBench:
    """One store for every campaign of the run, ticked by ``Client.run`` as a user would:
    the local executor's warm pool is started by a small warm-up campaign (timed apart as
    the cold start) and reused by every timed campaign after it."""

    def __init__(self, home: str) -> None:
        from matdx.client import Client
        from matdx.workflows.executors.local import LocalExecutor

        self.home = Path(home)
        self.client = Client(home, executors={"local": LocalExecutor(2, idle_s=60)})
        start = time.perf_counter()
        self.run("fan-out", 2)
        self.cold_start_s = time.perf_counter() - start

    def run(self, shape: str, n: int) -> MatdxRun:
        graph = matdx_graph(shape, n)
        ticks: list[float] = []
        pool = self._pool_pid()
        cpu = time.process_time() + _tree_cpu_s(pool)
        start = time.perf_counter()
        # force: a repeat never reuses an earlier run's results
        campaign = self.client.submit(graph, force=True)
        self.client.run(campaign, poll_s=0.002,
                        on_tick=lambda report, _: ticks.append(report.seconds))
        elapsed = time.perf_counter() - start
        cpu = time.process_time() + _tree_cpu_s(pool) - cpu
        return MatdxRun(elapsed, len(ticks), statistics.median(ticks),
                        self._latencies(campaign), cpu)

    def _pool_pid(self) -> int | None:
        try:
            return int(json.loads((self.home / "pool" / "pool.json").read_text())["pid"])
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def idle_tick_s(self) -> float:
        return min(_timed(self.client.tick) for _ in range(5))

    def _latencies(self, campaign: str) -> list[float]:
        """Seconds from the end of each dependent job's last parent to its start, from the
        ``result.json`` the jobs wrote (their own clocks)."""
        from sqlalchemy import select

        from matdx.store.models import Job, JobEdge

        times = {}
        for result in (self.home / "runs" / campaign).glob("*/result.json"):
            data = json.loads(result.read_text())
            times[data["job_id"]] = (data["started_at"], data["finished_at"])
        with self.client.store.transaction() as session:
            edges = session.execute(
                select(JobEdge.parent_id, JobEdge.child_id)
                .join(Job, Job.id == JobEdge.child_id)
                .where(Job.campaign_id == campaign)
            ).all()
        last_parent: dict[str, float] = {}  # a job starts when its last parent ended
        for parent, child in edges:
            if parent in times and child in times:
                last_parent[child] = max(last_parent.get(child, 0.0), times[parent][1])
        return [times[child][0] - end for child, end in last_parent.items()]

    def close(self) -> None:
        self.client.store.dispose()


def run_matdx_fireworks(shape: str, n: int) -> float:
    """Seconds from submit to the last record stored, through the fireworks executor:
    ``tick`` and ``rapidfire`` in turn until every job completed (mongomock mode)."""
    with tempfile.TemporaryDirectory() as home:
        # FireWorks picks mongomock when first imported with this set; the file is read
        # whenever a LaunchPad is opened.
        os.environ["MONGOMOCK_SERVERSTORE_FILE"] = str(Path(home) / "mongomock.json")
        Path(os.environ["MONGOMOCK_SERVERSTORE_FILE"]).write_text("{}")
        from fireworks.core.rocket_launcher import rapidfire

        from matdx.client import Client
        from matdx.workflows.executors.fireworks import open_launchpad

        file = Path(home) / "my_launchpad.yaml"
        file.write_text("host: localhost\nname: bench_executor\nstrm_lvl: ERROR\n")
        with open_launchpad(file) as launchpad:
            launchpad.reset("", require_password=False)
        client = Client(home)
        graph = matdx_graph(shape, n, {"type": "fireworks", "launchpad": str(file)})
        here = os.getcwd()
        start = time.perf_counter()
        client.submit(graph, force=True)
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            logging.disable(logging.INFO)
            os.chdir(home)
            try:
                while set(client.tick().states) != {"COMPLETED"}:
                    with open_launchpad(file) as launchpad:
                        rapidfire(launchpad, strm_lvl="ERROR")
            finally:
                os.chdir(here)
                logging.disable(logging.NOTSET)
        elapsed = time.perf_counter() - start
        client.store.dispose()
    return elapsed


def _tree_cpu_s(pid: int | None) -> float:
    """CPU time (user + system, s) of a process and its live children (Linux ``/proc``)."""
    if pid is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(entry) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def run_jobflow(shape: str, n: int) -> float | None:
    try:
        from jobflow import Flow, job, run_locally
    except ImportError:
        return None

    @job
    def increment(value):
        return value + 1

    @job
    def gather(values):
        return sum(values)

    if shape == "chain":
        jobs = [increment(0)]
        for _ in range(n - 1):
            jobs.append(increment(jobs[-1].output))
    else:
        jobs = [increment(i) for i in range(n)]
        if shape == "fan-out+gather":
            jobs.append(gather([j.output for j in jobs]))
    start = time.perf_counter()
    logging.disable(logging.INFO)
    run_locally(Flow(jobs), log=False)
    logging.disable(logging.NOTSET)
    return time.perf_counter() - start


def run_fireworks(shape: str, n: int) -> float | None:
    # FireWorks reads this when first imported: its LaunchPad then runs on mongomock
    # (persisted to a file), as it does without a MongoDB server.
    if "MONGOMOCK_SERVERSTORE_FILE" not in os.environ:
        store = Path(tempfile.mkdtemp()) / "mongomock.json"
        store.write_text("{}")
        os.environ["MONGOMOCK_SERVERSTORE_FILE"] = str(store)
    try:
        import mongomock_persistence  # noqa: F401
        from fireworks import Firework, LaunchPad, PyTask, Workflow
        from fireworks.core.rocket_launcher import rapidfire
    except ImportError:
        return None
    launchpad = LaunchPad(name="bench", strm_lvl="ERROR")
    launchpad.reset("", require_password=False)
    fireworks = []
    links = {}
    for i in range(n):
        fireworks.append(Firework(PyTask(func="math.fabs", args=[i]), fw_id=i + 1))
        if shape == "chain" and i:
            links[fireworks[i - 1]] = [fireworks[i]]
    if shape == "fan-out+gather":
        last = Firework(PyTask(func="math.fabs", args=[0]), fw_id=n + 1)
        fireworks.append(last)
        for fw in fireworks[:-1]:
            links[fw] = [last]
    start = time.perf_counter()
    launchpad.add_wf(Workflow(fireworks, links))
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as directory, \
            contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        # FireWorks logs every rocket to stdout, and its ping thread to stderr.
        logging.disable(logging.INFO)
        os.chdir(directory)
        try:
            rapidfire(launchpad, strm_lvl="ERROR")
        finally:
            os.chdir(here)
            logging.disable(logging.NOTSET)
    return time.perf_counter() - start


class ParslBench:
    """Parsl's high-throughput executor (HTEX) with 2 workers on this machine, started once
    (outside the timings) and reused by every campaign, like matdx's warm pool."""

    def __init__(self, run_dir: str) -> None:
        import parsl
        from parsl.config import Config
        from parsl.executors import HighThroughputExecutor
        from parsl.providers import LocalProvider

        logging.getLogger("parsl").setLevel(logging.ERROR)
        # HTEX starts its interchange and workers as scripts of the environment's bin/
        bin_dir = str(Path(sys.executable).parent)
        os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
        self.parsl = parsl
        parsl.load(Config(
            executors=[HighThroughputExecutor(
                label="htex", max_workers_per_node=2, cores_per_worker=1,
                provider=LocalProvider(init_blocks=1, max_blocks=1),
            )],
            run_dir=run_dir,
            usage_tracking=0,
        ))

        @parsl.python_app
        def increment(value):
            return value + 1

        @parsl.python_app
        def gather(*values):
            return sum(values)

        self.increment, self.gather = increment, gather
        self.run("fan-out", 10)  # waits for the workers to connect

    def run(self, shape: str, n: int) -> float:
        start = time.perf_counter()
        if shape == "chain":
            future = self.increment(0)
            for _ in range(n - 1):
                future = self.increment(future)
            future.result()
        else:
            futures = [self.increment(i) for i in range(n)]
            if shape == "fan-out+gather":
                self.gather(*futures).result()
            else:
                for future in futures:
                    future.result()
        return time.perf_counter() - start

    def close(self) -> None:
        self.parsl.dfk().cleanup()


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} {five:.1f} {fifteen:.1f} on {os.cpu_count()} cores"


def _ms(seconds: float, n: int) -> float:
    return seconds / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--large", type=int, nargs="*", default=[],
                        help="also run fan-out and chain at these sizes (e.g. 100000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peers", action="store_true",
                        help="also time Parsl (HTEX), jobflow and FireWorks (N <= 1000)")
    parser.add_argument("--executor", choices=["local", "fireworks"], default="local",
                        help="fireworks: also time matdx's fireworks executor (N <= 1000)")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="matdx-bench-")
    parsl_dir = tempfile.mkdtemp(prefix="parsl-bench-")
    bench = MatdxBench(home)
    parsl_bench = None
    if args.peers:
        try:
            parsl_bench = ParslBench(parsl_dir)
        except ImportError:
            parsl_bench = None
    print(f"{_load()}; SQLite store, durable writes (fsync batched); warm pool cold start "
          f"{bench.cold_start_s * 1000:.0f} ms (a 2-job campaign, not counted below)")
    print("ms/job: wall time from submit to the last record; cpu: CPU ms/job of the ticking "
          "process plus the warm pool and its workers")
    print(f"{'shape':<16}{'N':>7}{'ms/job':>8}{'cpu':>6}{'runs':>5}{'ticks':>6}{'ms/tick':>8}"
          f"{'lat p50':>8}{'p99 ms':>7}   peers (ms/job, ratio peer/matdx)", flush=True)
    plan = [(shape, n) for shape in SHAPES for n in args.sizes]
    plan += [(shape, n) for shape in ("fan-out", "chain") for n in args.large]
    idle = {}
    try:
        for shape, n in plan:
            jobs = n + (shape == "fan-out+gather")
            runs = [bench.run(shape, n)
                    for _ in range(args.repeats if n <= 1000 else max(1, args.repeats - 2))]
            ours = statistics.median(_ms(r.seconds, jobs) for r in runs)
            cpu = statistics.median(_ms(r.cpu_s, jobs) for r in runs)
            middle = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
            latencies = sorted(x for r in runs for x in r.latencies_s)
            lat = (f"{statistics.median(latencies) * 1000:>8.1f}"
                   f"{latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000:>7.1f}"
                   if latencies else f"{'-':>8}{'-':>7}")
            idle[(shape, n)] = bench.idle_tick_s()
            peers = []
            if parsl_bench is not None and n <= 10000:
                theirs = statistics.median(_ms(parsl_bench.run(shape, n), jobs)
                                           for _ in range(len(runs)))
                peers.append(f"parsl-htex {theirs:.2f} ({theirs / ours:.2f})")
            if args.executor == "fireworks" and n <= 1000:
                theirs = _ms(run_matdx_fireworks(shape, n), jobs)
                peers.append(f"matdx fireworks executor {theirs:.2f} ({theirs / ours:.1f}x local)")
            if args.peers and n <= 1000:
                for name, runner in (("jobflow", run_jobflow), ("fireworks", run_fireworks)):
                    seconds = runner(shape, n)
                    if seconds is not None:
                        theirs = _ms(seconds, jobs)
                        peers.append(f"{name} {theirs:.2f} ({theirs / ours:.2f})")
            print(f"{shape:<16}{n:>7}{ours:>8.2f}{cpu:>6.2f}{len(runs):>5}{middle.ticks:>6}"
                  f"{middle.tick_s * 1000:>8.1f}{lat}   {'; '.join(peers)}   [{_load()}]",
                  flush=True)
        for (shape, n), seconds in idle.items():
            if n == max(n for _, n in idle):
                print(f"idle tick, store with every campaign above done ({shape} {n} last): "
                      f"{seconds * 1000:.1f} ms")
    finally:
        bench.close()
        if parsl_bench is not None:
            parsl_bench.close()
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(parsl_dir, ignore_errors=True)
    print(_load())


if __name__ == "__main__":
    main()
