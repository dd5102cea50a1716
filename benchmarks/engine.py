"""Engine throughput: campaigns of trivial jobs on the local executor and the SQLite store.

    python benchmarks/engine.py                 # N = 100, 1,000, 10,000; three shapes
    python benchmarks/engine.py --sizes 100 1000 --repeats 3 --peers
    python benchmarks/engine.py --sizes 100 --executor fireworks

For each shape (fan-out: N independent jobs; chain: N jobs each using the previous one's
output; fan-out + gather: N jobs and one that sums them) and size, it submits the campaign,
ticks until the last record is stored, and prints milliseconds per job (median over repeats),
then the time of a tick with nothing to do on the largest campaign. Every state change is
committed to the store (SQLite, WAL). With ``--peers`` it runs the same shapes with jobflow
(in memory, nothing persisted) and FireWorks (on mongomock) when they are installed, in the
same run, and prints matdx's speed-up over each. With ``--executor fireworks`` it also runs
each campaign (N <= 1000) through matdx's fireworks executor on a LaunchPad in FireWorks'
mongomock mode (ticks and ``rapidfire`` in turn, in this process) and prints its per-job
time beside the native (local) executor's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
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


def run_matdx(shape: str, n: int) -> tuple[float, float]:
    """Seconds from submit to the last record stored; and one idle tick's seconds."""
    from matdx.client import Client
    from matdx.workflows.executors.local import LocalExecutor

    with tempfile.TemporaryDirectory() as home:
        client = Client(home, executors={"local": LocalExecutor(2)})
        graph = matdx_graph(shape, n)
        # a unique input per run, so de-duplication never short-cuts a repeat
        start = time.perf_counter()
        campaign = client.submit(graph, force=True)
        client.run(campaign, poll_s=0.02)
        elapsed = time.perf_counter() - start
        idle = min(_timed(client.tick) for _ in range(5))
        client.store.dispose()
    return elapsed, idle


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peers", action="store_true",
                        help="also time jobflow and FireWorks (N <= 1000) when installed")
    parser.add_argument("--executor", choices=["local", "fireworks"], default="local",
                        help="fireworks: also time matdx's fireworks executor (N <= 1000)")
    args = parser.parse_args()

    print(f"{'shape':<16}{'N':>7}{'ms/job':>10}{'runs':>6}   peers (ms/job, matdx speed-up)")
    idle = {}
    for shape in SHAPES:
        for n in args.sizes:
            times = []
            for _ in range(args.repeats if n <= 1000 else max(1, args.repeats - 2)):
                elapsed, idle_s = run_matdx(shape, n)
                times.append(elapsed / (n + (shape == "fan-out+gather")))
                idle[(shape, n)] = idle_s
            ours = statistics.median(times) * 1000
            peers = []
            if args.executor == "fireworks" and n <= 1000:
                seconds = run_matdx_fireworks(shape, n)
                theirs = seconds / (n + (shape == "fan-out+gather")) * 1000
                peers.append(f"matdx fireworks executor {theirs:.2f} ({theirs / ours:.1f}x local)")
            if args.peers and n <= 1000:
                for name, runner in (("jobflow", run_jobflow), ("fireworks", run_fireworks)):
                    seconds = runner(shape, n)
                    if seconds is not None:
                        theirs = seconds / n * 1000
                        peers.append(f"{name} {theirs:.2f} ({theirs / ours:.1f}x)")
            print(f"{shape:<16}{n:>7}{ours:>10.2f}{len(times):>6}   {'; '.join(peers)}",
                  flush=True)
    largest = max(args.sizes)
    for shape in SHAPES:
        print(f"idle tick, {shape} campaign of {largest} done jobs: "
              f"{idle[(shape, largest)] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
