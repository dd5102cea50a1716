"""Reference diffusion coefficient of Cu with ASE's EMT potential, from a long seeded run.

Runs the md recipe's job and its analysis in this process (no store) on the demo's system:
256 Cu atoms (4×4×4 cubic fcc cells), Langevin NVT, 4 fs steps, a frame every 10 steps, the
liquid melted at 4000 K for 250 steps first. It prints the estimate of
:mod:`matdx.kernels.diffusion` and, with ``--output``, writes it as JSON. The committed
``benchmarks/diffusion_reference.json`` is the output of::

    python benchmarks/diffusion_reference.py --temperature 2000 --steps 2500 --seed 7 \\
        --output benchmarks/diffusion_reference.json

``tests/recipes/test_diffusion.py`` runs the demo-length version (600 steps) of the same
function and checks it against that file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ase.build import bulk

from matdx.recipes.analysis import analyze
from matdx.recipes.md import md
from matdx.workflows import ArtifactFile


def run(temperature_K: float, steps: int, seed: int, premelt: bool | None = None,
        keep: Path | None = None) -> dict[str, Any]:
    """MD of 256 Cu atoms at ``temperature_K`` and its MSD analysis; returns the analysis.

    ``premelt`` (default: above 1500 K) melts the crystal at 4000 K for 250 steps first;
    ``keep`` names a file to copy the H5MD trajectory to.
    """
    melt = temperature_K > 1500 if premelt is None else premelt
    atoms = bulk("Cu", cubic=True).repeat((4, 4, 4))
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)
        try:
            out = md.original(atoms=atoms, code="emt", temperature_K=temperature_K,
                              timestep_fs=4.0, steps=steps, sample_every=10, seed=seed,
                              premelt_temperature_K=4000.0 if melt else None,
                              premelt_steps=250 if melt else 0)
            trajectory = ArtifactFile(Path(work) / "md.h5")
            result = analyze.original(trajectory, temperature_K, 0.2, kernels=["msd"])
            if keep is not None:
                shutil.copyfile(trajectory.path, keep)
        finally:
            os.chdir(here)
    keys = ("diffusion", "diffusion_detected", "D_cm2_per_s", "D_cm2_per_s_err",
            "D_upper_cm2_per_s", "D_fit_cm2_per_s", "fit_window_fs", "ballistic_end_fs",
            "msd_exponent", "frames_analysed")
    return {"temperature_K": temperature_K, "steps": steps, "seed": seed,
            "temperature_mean_K": out["temperature_mean_K"], **{k: result[k] for k in keys}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--temperature", type=float, default=2000.0, help="K")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--keep", type=Path, help="copy the H5MD trajectory to this file")
    args = parser.parse_args()
    start = time.perf_counter()
    result = run(args.temperature, args.steps, args.seed, keep=args.keep)
    result["command"] = (f"python benchmarks/diffusion_reference.py --temperature "
                         f"{args.temperature:g} --steps {args.steps} --seed {args.seed}")
    print(json.dumps(result, indent=2))
    print(f"{time.perf_counter() - start:.0f} s")
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
