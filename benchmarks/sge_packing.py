"""Allocation use on the Grid Engine test cluster: 60 EMT jobs of mixed sizes through ``qsub``.

Usage::

    bash hpc/testcluster/sge.sh start --slots 8
    python benchmarks/sge_packing.py [--home DIR] [--walltime 00:02:00]

The same campaign as ``slurm_packing.py`` (10 jobs of 4 cores × 10 s, 20 of 2 cores × 8 s,
30 of 1 core × 6 s, interleaved, each with its estimate), with ``executor: {type: sge, site:
local-sge-testcluster}``: every batch is one ``qsub`` job in the ``smp`` parallel environment.
``matdx tick`` runs as separate processes every few seconds until the campaign is done; then
``matdx status`` and ``matdx report`` are printed, with the allocation use of the whole
campaign (busy / allocated core-seconds, target ≥ 95 %) and the machine load beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(HERE))

SITE = "local-sge-testcluster"


def build(walltime: str):
    """The campaign of ``slurm_packing.py``, sent to the Grid Engine site."""
    from slurm_packing import build as build_slurm

    from matdx.workflows.executors.spec import validate_executor
    from matdx.workflows.submit import CampaignGraph

    graph = build_slurm(walltime)
    executor = validate_executor(
        {**graph.executor, "type": "sge", "site": SITE}
    ).model_dump(mode="json")
    return CampaignGraph("sge-packing", graph.workflows, executor, {"benchmark": "sge_packing"})


def matdx(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "matdx.cli.main", *args],
        capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "200"},
    )
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--walltime", default="00:02:00")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between ticks")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="matdx-sge-packing-"))
    os.environ["MATDX_HOME"] = str(home)
    os.environ.pop("MATDX_STORE", None)
    from matdx.client import Client

    client = Client(home)
    campaign = client.submit(build(args.walltime))
    client.store.dispose()
    print(f"home {home}; campaign {campaign}; load average {os.getloadavg()}", flush=True)
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
    print(matdx("status"))
    print(matdx("report", "sge-packing"))
    usage = json.loads(matdx("report", "sge-packing", "--format", "json"))
    print(
        f"allocation use {100 * usage['utilisation']:.1f} % (target >= 95 %): busy "
        f"{usage['busy_core_s']:.1f} of {usage['allocated_core_s']:.1f} allocated core-s in "
        f"{len(usage['batches'])} batch job(s); load average {os.getloadavg()} on "
        f"{os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
