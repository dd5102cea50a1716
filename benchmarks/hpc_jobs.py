"""Job functions of the HPC acceptance benchmark (imported by task-farm workers)."""

from __future__ import annotations

import time

from matdx.workflows import job


@job
def emt_hold(repeat: int, steps: int, hold_s: float, seed: int = 0) -> dict[str, float]:
    """Short EMT molecular dynamics of a Cu supercell, then hold the slots until ``hold_s``.

    The MD is real work (``repeat``³ cubic cells of 4 atoms, ``steps`` velocity-Verlet steps of
    2 fs from 300 K velocities drawn with ``seed``, so that no two jobs of a campaign are
    identical and none reuses another's result); the hold stands for the rest of a longer
    calculation, so that the packing of jobs of several sizes can be measured on a test cluster
    that advertises more cores than the machine has.

    Returns
    -------
    dict
        ``energy_eV`` (potential energy at the end, eV), ``natoms``, ``compute_s`` (time of the
        MD, s) and ``held_s`` (total time of the job, s).
    """
    import numpy as np
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet
    from ase.units import fs

    started = time.perf_counter()
    atoms = bulk("Cu", cubic=True).repeat(repeat)
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(seed))
    VelocityVerlet(atoms, timestep=2 * fs).run(steps)
    energy = float(atoms.get_potential_energy())
    computed = time.perf_counter() - started
    time.sleep(max(0.0, hold_s - computed))
    return {
        "energy_eV": energy,
        "natoms": len(atoms),
        "compute_s": computed,
        "held_s": time.perf_counter() - started,
    }
