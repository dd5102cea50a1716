"""Acceptance run of issue 4: 60 EMT jobs of mixed sizes on the Slurm test cluster.

Usage::

    bash hpc/testcluster/cluster.sh start --cpus 8
    python benchmarks/slurm_packing.py [--home DIR] [--walltime 00:02:00]

Submits a campaign of 60 ``emt_hold`` jobs (see ``hpc_jobs.py``): 10 jobs of 4 cores × 10 s
(256-atom cells), 20 of 2 cores × 8 s (108 atoms), 30 of 1 core × 6 s (32 atoms), in
interleaved order, each with its estimate in ``resources.estimate_s`` (the hold plus 2 s for
starting the task's process). Then it runs ``matdx tick`` as separate processes every few
seconds (as cron would, only faster) until the campaign is done, and prints ``matdx status``
and ``matdx report``. The acceptance numbers (at most 6 batch jobs, utilisation at least 85 %)
are read off the report.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(HERE))

SIZES = [  # (cores, supercell repeat, seconds, how many)
    (4, 4, 10.0, 10),
    (2, 3, 8.0, 20),
    (1, 2, 6.0, 30),
]


def build(walltime: str):
    from hpc_jobs import emt_hold

    from matdx.workflows import Flow
    from matdx.workflows.executors.spec import validate_executor
    from matdx.workflows.submit import CampaignGraph

    queues = [
        [(cores, repeat, hold) for _ in range(count)] for cores, repeat, hold, count in SIZES
    ]
    order = []
    while any(queues):  # interleave the sizes, as a campaign of mixed structures would
        for queue in queues:
            if queue:
                order.append(queue.pop())
    flows = []
    for seed, (cores, repeat, hold) in enumerate(order):
        one = emt_hold(repeat, 20, hold, seed)
        one.configure(resources={"cores": cores, "estimate_s": hold + 2.0})
        flows.append(("emt-hold", Flow([one])))
    executor = validate_executor(
        {
            "type": "slurm",
            "site": "local-slurm-testcluster",
            "resources": {"walltime": walltime},
            "max_tasks_per_batch": 60,
        }
    ).model_dump(mode="json")
    return CampaignGraph("hpc-packing", flows, executor, {"benchmark": "slurm_packing"})


def matdx(*args: str, check: bool = True) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "matdx.cli.main", *args],
        capture_output=True, text=True, check=check, env={**os.environ, "COLUMNS": "200"},
    )
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--walltime", default="00:02:00")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between ticks")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="matdx-slurm-packing-"))
    os.environ["MATDX_HOME"] = str(home)
    os.environ.pop("MATDX_STORE", None)
    from matdx.client import Client

    client = Client(home)
    campaign = client.submit(build(args.walltime))
    client.store.dispose()
    print(f"home {home}; campaign {campaign}", flush=True)
    started = time.monotonic()
    ticks = 0
    while True:
        line = matdx("tick").strip()
        ticks += 1
        print(f"[{time.monotonic() - started:6.1f} s] {line}", flush=True)
        if "ready=" not in line and "running=" not in line and "waiting=" not in line:
            break
        time.sleep(args.every)
    print(f"{ticks} ticks, {time.monotonic() - started:.0f} s")
    print(matdx("status", check=False))  # exits 1 when a job FAILED
    print(matdx("report", "hpc-packing"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
