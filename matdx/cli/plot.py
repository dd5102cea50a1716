"""``matdx plot RECORD``: a figure drawn from a stored record alone (no run directory).

=============  ===========================================================================
record         figure
=============  ===========================================================================
eos            E(V) points and the Birch–Murnaghan fit, B0 ± error in the title
elastic        stress against strain for each strained component, with the fitted slopes
phonon         dispersion along the path (labelled) and the phonon DOS
bands          eigenvalues along the path (special points marked) and the DOS
md-analysis    g(r) and the MSD with its fitted window
=============  ===========================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from matdx.cli.options import Home
from matdx.cli.tables import console, err_console

__all__ = ["draw", "plot"]

VOIGT = ("xx", "yy", "zz", "yz", "xz", "xy")
SUFFIXES = (".png", ".pdf", ".svg")


def _eos(data: Any, axes: Any) -> str:
    import numpy as np
    from ase.units import GPa

    from matdx.recipes.eos import birch_murnaghan

    volumes, energies = np.asarray(data.volumes_A3), np.asarray(data.energies_eV)
    grid = np.linspace(volumes.min(), volumes.max(), 200)
    fit = birch_murnaghan(grid, data.E0_eV, data.V0_A3, data.B0_GPa_full_range * GPa,
                          data.B0_prime)
    axes[0].plot(grid, fit - data.E0_eV, label="Birch–Murnaghan fit")
    axes[0].plot(volumes, energies - data.E0_eV, "o", label="calculations")
    axes[0].set(xlabel="volume (Å³)", ylabel="E − E0 (eV)")
    axes[0].legend()
    return f"B0 = {data.B0_GPa:.2f} ± {data.B0_GPa_err:.2f} GPa, B0' = {data.B0_prime:.2f}"


def _elastic(data: Any, axes: Any) -> str:
    import numpy as np

    strains, stresses = np.asarray(data.strains), np.asarray(data.stresses_GPa)
    components, c = np.asarray(data.components), np.asarray(data.C_GPa)
    line = np.linspace(strains.min(), strains.max(), 2)
    for j in sorted(set(components.tolist())):
        mine = components == j
        (dots,) = axes[0].plot(strains[mine], stresses[mine, j], "o",
                               label=f"σ_{VOIGT[j]} vs e_{VOIGT[j]}")
        offset = np.mean(stresses[mine, j] - c[j, j] * strains[mine])
        axes[0].plot(line, c[j, j] * line + offset, color=dots.get_color())
    axes[0].set(xlabel="Voigt strain", ylabel="stress (GPa, tension +)")
    axes[0].legend(fontsize="small")
    return (f"C11 = {c[0, 0]:.1f}, C12 = {c[0, 1]:.1f}, C44 = {c[3, 3]:.1f} GPa")


def _path(axes: Any, distances: Any, values: Any, segments: Any, labels: Any) -> None:
    import numpy as np

    distances, values = np.asarray(distances), np.asarray(values)
    for (first, last) in segments:
        axes.plot(distances[first:last + 1], values[first:last + 1], color="C0", lw=1)
    ticks, names = [], []
    for (first, last), (start, end) in zip(segments, labels, strict=True):
        for index, name in ((first, start), (last, end)):
            if ticks and abs(ticks[-1] - distances[index]) < 1e-9:
                if name != names[-1]:
                    names[-1] = f"{names[-1]}|{name}"
                continue
            ticks.append(distances[index])
            names.append(name)
    axes.set_xticks(ticks, names)
    for tick in ticks:
        axes.axvline(tick, color="grey", lw=0.5)
    axes.set_xlim(distances.min(), distances.max())


def _phonon(data: Any, axes: Any) -> str:
    _path(axes[0], data.band_distances, data.band_frequencies_THz, data.band_segments,
          data.band_labels)
    axes[0].set(ylabel="frequency (THz)")
    axes[1].plot(data.dos_states_per_THz, data.dos_frequencies_THz)
    axes[1].set(xlabel="DOS (states/THz)")
    axes[1].sharey(axes[0])
    return "phonon dispersion and DOS"


def _bands(data: Any, axes: Any) -> str:
    import numpy as np

    eigenvalues = np.asarray(data.eigenvalues_eV) - data.fermi_level_eV
    kpoints = np.asarray(data.kpoints)
    distances = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(kpoints, axis=0),
                                                                axis=1))])
    for spin in eigenvalues:
        axes[0].plot(distances, spin, color="C0", lw=1)
    for label, point in data.special_points.items():
        near = np.linalg.norm(kpoints - np.asarray(point), axis=1)
        for index in np.flatnonzero(near < 1e-6):
            axes[0].axvline(distances[index], color="grey", lw=0.5)
            axes[0].annotate(label, (distances[index], 0), xycoords=("data", "axes fraction"),
                             ha="center", va="top")
    axes[0].axhline(0.0, color="k", lw=0.5, ls="--")
    axes[0].set(ylabel="E − E_F (eV)")
    dos = np.atleast_2d(np.asarray(data.dos_states_per_eV))
    for spin in dos:
        axes[1].plot(spin, np.asarray(data.dos_energies_eV) - data.fermi_level_eV)
    axes[1].set(xlabel="DOS (states/eV)")
    axes[1].sharey(axes[0])
    return f"band structure, gap {data.band_gap_eV:.3f} eV"


def _md(data: Any, axes: Any) -> str:
    if data.r_A is not None:
        axes[0].plot(data.r_A, data.g_r)
        axes[0].set(xlabel="r (Å)", ylabel="g(r)")
    if data.time_fs is not None:
        axes[1].plot(data.time_fs, data.msd_A2)
        if data.fit_window_fs:
            axes[1].axvspan(*data.fit_window_fs, color="C1", alpha=0.2, label="fit window")
            axes[1].legend()
        axes[1].set(xlabel="time (fs)", ylabel="MSD (Å²)")
    thermostat = f", {data.thermostat}" if data.thermostat else ""
    return f"{data.ensemble or 'MD'} at {data.temperature_K:g} K{thermostat}"


DRAWERS = {"eos": (_eos, 1), "elastic": (_elastic, 1), "phonon": (_phonon, 2),
           "bands": (_bands, 2), "md-analysis": (_md, 2)}


def draw(stored: Any) -> Any:
    """A matplotlib Figure of a stored record's recipe data.

    Raises
    ------
    LookupError
        When the record holds no recipe data (a plain calculation record).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = stored.results.data
    if data is None:
        raise LookupError(f"record {stored.record_id} holds no recipe data to plot; records of "
                          f"{', '.join(DRAWERS)} do")
    drawer, panels = DRAWERS[data.kind]
    ratios = {"width_ratios": [3, 1]} if data.kind in ("phonon", "bands") else None
    figure, axes = plt.subplots(1, panels, figsize=(5 * panels + 1, 4.5), squeeze=False,
                                gridspec_kw=ratios)
    subtitle = drawer(data, list(axes[0]))
    system = stored.record.system
    formula = system.chemical_formula_reduced if system else ""
    figure.suptitle(f"{formula} {data.kind} — {stored.method.label}\n{subtitle}",
                    fontsize="medium")
    figure.tight_layout()
    return figure


def plot(
    record: Annotated[str, typer.Argument(help="record id (or a unique prefix)")],
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="figure file (.png, .pdf, .svg)")] = None,
    home: Home = None,
) -> None:
    """Draw the figure of a phonon, EOS, elastic, bands or MD-analysis record from the store."""
    import matplotlib.pyplot as plt

    from matdx.client import Client

    if output is not None and output.suffix.lower() not in SUFFIXES:
        err_console.print(f"[bold red]error:[/bold red] --output {str(output)!r}: expected a "
                          f"{', '.join(SUFFIXES)} file", highlight=False)
        raise typer.Exit(2)
    try:
        stored = Client(home).record(record)
        figure = draw(stored)
    except LookupError as error:
        from rich.markup import escape

        err_console.print(f"[bold red]error:[/bold red] {escape(str(error))}", highlight=False)
        raise typer.Exit(2) from error
    target = output or Path(f"{stored.record_id}.png")
    figure.savefig(target, dpi=120)
    plt.close(figure)
    console.print(f"wrote {target}", highlight=False)
