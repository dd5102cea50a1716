"""Analysis of a stored trajectory with the numba kernels of :mod:`matdx.kernels`.

The :func:`analyze` job reads an H5MD trajectory artifact block of frames by block and computes
the quantities its ``kernels`` name:

=========  ================================================================================
``rdf``    total g(r) (accumulated block by block), first peak, first-shell coordination
``msd``    mean squared displacement over all time origins; diffusion coefficient with an
           error that accounts for time correlation, or "no diffusion detected" and an
           upper bound (:mod:`matdx.kernels.diffusion`)
``vacf``   velocity autocorrelation (normalised) and the vibrational DOS (THz)
``sq``     static structure factor S(q) on the allowed q-vectors of the cell
``angles`` bond-angle distribution within the first coordination shell
=========  ================================================================================

Frames before equilibrium are left out: by default from the first frame at which the
trajectory's potential energy and temperature are steady (:mod:`matdx.kernels.equilibration`:
the start that keeps the most independent samples, taken for each observable, the later one
wins), or a fixed leading ``equilibration_fraction``. The part kept is checked for drift: a
potential energy or temperature whose halves differ by more than 3 standard errors is reported
in ``warnings``. Units: Å, fs, THz, Å⁻¹, degrees.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from matdx.codes.trajectory import TrajectoryReader
from matdx.kernels.angles import bond_angle_distribution
from matdx.kernels.cells import max_cutoff
from matdx.kernels.diffusion import FitWindowTooShort, estimate_diffusion
from matdx.kernels.equilibration import drift, equilibration_start
from matdx.kernels.msd import mean_squared_displacement
from matdx.kernels.rdf import RDFAccumulator, running_coordination_number
from matdx.kernels.structure_factor import StructureFactorAccumulator
from matdx.kernels.vacf import velocity_autocorrelation, vibrational_dos
from matdx.recipes.derived import derived_method
from matdx.workflows import ArtifactFile, job

__all__ = ["KERNELS", "MIN_FRAMES_FOR_D", "analyze"]

KERNELS = ("rdf", "msd", "vacf", "sq", "angles")
MIN_FRAMES_FOR_D = 10  # frames after equilibration needed to fit the MSD's linear regime
DEFAULT_EQUILIBRATION_FRACTION = 0.2  # left out when the trajectory has no observables
STEADY_OBSERVABLES = ("potential_energy", "temperature")
DRIFT_LIMIT = 3.0  # standard errors between the halves of an observable that count as drift


def _observables(reader: TrajectoryReader, frames_per_block: int) -> dict[str, np.ndarray]:
    """Every frame's observables (potential energy eV, temperature K, …), read block by
    block."""
    if not reader.observables:
        return {}
    parts: dict[str, list[np.ndarray]] = {}
    for block in reader.blocks(frames_per_block):
        for name, values in block.observables.items():
            parts.setdefault(name, []).append(np.asarray(values))
    return {name: np.concatenate(values) for name, values in parts.items()}


def _equilibrated_from(observables: dict[str, np.ndarray], n_frames: int,
                       fraction: float | None) -> tuple[int, str, list[str]]:
    """First frame kept, how it was chosen (one line) and drift warnings."""
    series = {name: np.asarray(observables[name], dtype=np.float64)
              for name in STEADY_OBSERVABLES if name in observables}
    series = {name: x for name, x in series.items() if x.size == n_frames and x.size >= 8
              and np.all(np.isfinite(x))}
    if fraction is not None:
        skip, how = int(fraction * n_frames), f"first {fraction:g} of the frames left out"
    elif not series:
        skip = int(DEFAULT_EQUILIBRATION_FRACTION * n_frames)
        how = (f"first {DEFAULT_EQUILIBRATION_FRACTION:g} of the frames left out (the "
               "trajectory records no potential energy or temperature to detect equilibrium)")
    else:
        starts = {name: equilibration_start(x).index for name, x in series.items()}
        skip = max(starts.values())
        how = "steady from frame {} on ({})".format(
            skip, ", ".join(f"{name.replace('_', ' ')} from {k}" for name, k in starts.items()))
    warnings = []
    for name, x in series.items():
        if x.size - skip >= 8:
            z = drift(x[skip:])
            if abs(z) > DRIFT_LIMIT:
                warnings.append(f"{name.replace('_', ' ')} still drifts after frame {skip} "
                                f"(halves differ by {z:+.1f} standard errors): run longer")
    return skip, how, warnings


def _rdf_summary(g: Any) -> dict[str, Any]:
    peak = int(np.argmax(g.g))
    shell = running_coordination_number(g.edges, g.g, g.density)
    minimum = peak + int(np.argmin(g.g[peak:]))  # first minimum after the peak
    return {"r": g.r, "g_r": g.g, "first_peak_A": float(g.r[peak]),
            "first_minimum_A": float(g.r[minimum]),
            "coordination_first_shell": float(shell[minimum])}


def _msd_summary(positions: np.ndarray, cells: np.ndarray, times: np.ndarray,
                 pbc: np.ndarray) -> tuple[dict[str, Any], list[str]]:
    if len(times) < 2:
        raise ValueError(
            f"trajectory: {len(times)} frame(s) left after equilibration; the MSD needs at "
            "least 2 (lower equilibration_fraction or sample more often)"
        )
    msd = mean_squared_displacement(positions, float(times[1] - times[0]), cell=cells, pbc=pbc)
    out: dict[str, Any] = {"time_fs": msd.time, "msd_A2": msd.msd}
    if len(times) < MIN_FRAMES_FOR_D:
        return out, [f"{len(times)} frames analysed: too few for a diffusion coefficient "
                     f"(at least {MIN_FRAMES_FOR_D})"]
    try:
        d = estimate_diffusion(msd.time, msd.msd, positions.shape[1])
    except FitWindowTooShort as short:  # the MSD and g(r) still stand
        return out, [f"no diffusion coefficient: {short}; run longer or sample more often"]
    value, error, bound = d.in_cm2_per_s()
    # D is None when no diffusion is detected: a solid reports an upper bound, never a value.
    out.update(diffusion=d.describe(), diffusion_detected=d.detected,
               D_A2_per_fs=d.D if d.detected else None,
               D_cm2_per_s=value if d.detected else None, D_cm2_per_s_err=error,
               D_upper_cm2_per_s=bound, D_fit_cm2_per_s=value,
               fit_window_fs=list(d.fit_window), ballistic_end_fs=d.ballistic_end,
               msd_exponent=d.exponent)
    return out, list(d.notes)


@job
def analyze(
    trajectory: ArtifactFile,
    temperature_K: float | None = None,
    equilibration_fraction: float | None = None,
    r_max: float = 6.0,
    bins: int = 150,
    kernels: tuple[str, ...] | list[str] = ("rdf", "msd"),
    q_max: float = 8.0,
    frames_per_block: int = 256,
    method: dict[str, Any] | None = None,
    md: dict[str, Any] | None = None,
    structure: Any = None,
) -> dict[str, Any]:
    """Structure and dynamics of an MD trajectory.

    Parameters
    ----------
    trajectory
        An H5MD trajectory (positions unwrapped or not; the cell of every frame).
    temperature_K
        Recorded with the results (the MD's target temperature).
    equilibration_fraction
        Leading fraction of the frames left out; None (default) leaves out the frames before
        the potential energy and temperature are steady (0.2 of them if the trajectory
        records neither).
    r_max, bins
        Range of g(r), Å (reduced to just under half the smallest cell width), and its bins;
        ``bins`` also bins S(q) up to ``q_max`` (Å⁻¹).
    kernels
        Which analyses to run, among :data:`KERNELS`.
    method, md, structure
        The MD run's method section (inherited by the analysis record), its ``md`` settings
        (ensemble, thermostat, time step; kept with the results) and its structure (the
        record's system and formula).

    Returns
    -------
    dict
        ``rdf``: ``r`` (Å), ``g_r``, ``first_peak_A``, ``coordination_first_shell``;
        ``msd``: ``time_fs``, ``msd_A2``, ``diffusion`` (one line), ``D_cm2_per_s`` ±
        ``D_cm2_per_s_err`` (None when no diffusion is detected), ``D_upper_cm2_per_s``
        (the upper bound then), ``D_fit_cm2_per_s`` (the fitted slope / 6),
        ``fit_window_fs``, ``ballistic_end_fs``, ``msd_exponent``;
        ``vacf``: ``vacf``, ``vdos_frequency_THz``, ``vdos``; ``sq``: ``q``, ``s_q``;
        ``angles``: ``angle_deg``, ``angle_density``; always ``equilibration`` (how the first
        frame kept was chosen), ``equilibration_fs`` (its time from the trajectory's start).
    """
    unknown = sorted(set(kernels) - set(KERNELS))
    if unknown:
        raise ValueError(f"kernels: unknown {unknown}; accepted: {', '.join(KERNELS)}")
    with TrajectoryReader(trajectory.path) as reader:
        if equilibration_fraction is not None and not 0 <= equilibration_fraction < 0.9:
            raise ValueError(f"equilibration_fraction: {equilibration_fraction!r} is outside "
                             "[0, 0.9)")
        if reader.n_frames == 0:
            raise ValueError("trajectory: no frames")
        observables = _observables(reader, frames_per_block)
        skip, how, drifting = _equilibrated_from(observables, reader.n_frames,
                                                 equilibration_fraction)
        first = reader.read(skip, skip + 1)
        start_time = reader.read(0, 1).times[0]
        pbc = reader.pbc
        r_max = min(r_max, 0.999 * max_cutoff(first.cells[0], pbc))
        rdf = RDFAccumulator(r_max, bins, pbc=pbc)
        sq = StructureFactorAccumulator(q_max, bins)
        positions, cells, times, velocities = [], [], [], []
        for start in range(skip, reader.n_frames, frames_per_block):
            block = reader.read(start, start + frames_per_block)
            if "rdf" in kernels or "angles" in kernels:
                rdf.update(block.positions, block.cells)
            if "sq" in kernels:
                sq.update(block.positions, block.cells)
            positions.append(block.positions)
            cells.append(block.cells)
            times.append(block.times)
            if "vacf" in kernels:
                if block.velocities is None:
                    raise ValueError("kernels: 'vacf' needs velocities, the trajectory has none")
                velocities.append(block.velocities)
    positions, cells, times = (np.concatenate(x) for x in (positions, cells, times))
    output: dict[str, Any] = {"temperature_K": temperature_K, "frames_analysed": len(times),
                              "kernels": list(kernels), "equilibration": how,
                              "equilibration_fs": float(times[0] - start_time)}
    warnings: list[str] = list(drifting)
    if "rdf" in kernels or "angles" in kernels:
        output.update(_rdf_summary(rdf.result()))
    if "msd" in kernels:
        summary, notes = _msd_summary(positions, cells, times, pbc)
        output.update(summary)
        warnings += notes
    if "vacf" in kernels:
        result = velocity_autocorrelation(np.concatenate(velocities), float(times[1] - times[0]),
                                          normalize=True)
        frequency, dos = vibrational_dos(result.vacf, float(times[1] - times[0]))
        output.update(vacf=result.vacf, vdos_frequency_THz=frequency, vdos=dos)
    if "sq" in kernels:
        structure_factor = sq.result()
        output.update(q=structure_factor.q, s_q=structure_factor.s)
    if "angles" in kernels:
        angles = bond_angle_distribution(positions[-1], output["first_minimum_A"], cells[-1],
                                         pbc)
        output.update(angle_deg=angles.angle, angle_density=angles.density)
    output["warnings"] = warnings
    settings = {"kernels": list(kernels), "equilibration_fraction": equilibration_fraction,
                "r_max": r_max, "bins": bins, "q_max": q_max}
    output["method"] = (derived_method([method], "md-analysis", settings) if method is not None
                        else {"calculation": "md-analysis", "parameters": settings})
    if md is not None:
        output["md"] = dict(md)
    if structure is not None:
        output["structure"] = structure
    run = md or {}
    output["data"] = {
        "kind": "md-analysis", "ensemble": run.get("ensemble"),
        "thermostat": run.get("thermostat") or _thermostat(method),
        "temperature_K": temperature_K, "timestep_fs": run.get("timestep_fs"),
        "r_A": output.get("r"), "g_r": output.get("g_r"), "time_fs": output.get("time_fs"),
        "msd_A2": output.get("msd_A2"), "fit_window_fs": output.get("fit_window_fs"),
        "D_cm2_per_s": output.get("D_cm2_per_s"),
        "D_cm2_per_s_err": output.get("D_cm2_per_s_err"),
    }
    return output


def _thermostat(method: dict[str, Any] | None) -> str | None:
    """The thermostat a program's MD parameters name (LAMMPS: ``thermostat``)."""
    parameters = (method or {}).get("parameters") or {}
    return parameters.get("thermostat")
