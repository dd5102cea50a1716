"""``matdx demo``: the built-in campaign, its results table and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matdx.workflows.serialization import decode

__all__ = ["DEMO_CAMPAIGN", "demo_tables", "write_plots"]

DEMO_CAMPAIGN = Path(__file__).with_name("demo.yaml")


def _by_recipe(results: list[dict[str, Any]], recipe: str) -> list[dict[str, Any]]:
    return [{**row, "output": decode(row["output"])} for row in results if row["recipe"] == recipe]


def demo_tables(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows of the demo's two tables: EOS per element, diffusion per temperature."""
    eos = [
        {
            "element": row["formula"],
            "V0 (Å³/atom)": row["output"]["V0_per_atom"],
            "E0 (eV/atom)": row["output"]["E0_per_atom"],
            "B0 (GPa)": row["output"]["B0_GPa"],
            "B0'": row["output"]["B0_prime"],
        }
        for row in _by_recipe(results, "eos")
    ]
    md = [
        {
            "system": row["workflow"].removeprefix("md ").rsplit(" ", 2)[0],
            "T (K)": row["output"]["temperature_K"],
            # "D = … ± … cm²/s", or "no diffusion detected, D < … cm²/s" for a solid
            "diffusion": row["output"]["diffusion"],
            # the frames before the run was steady are left out; lags fitted after them
            "left out (fs)": f"{row['output'].get('equilibration_fs', 0.0):g}",
            "MSD fit (fs)": "–".join(f"{t:g}" for t in row["output"]["fit_window_fs"]),
            "g(r) peak (Å)": row["output"]["first_peak_A"],
        }
        for row in sorted(_by_recipe(results, "md"), key=lambda r: r["output"]["temperature_K"])
    ]
    return {"eos": eos, "md": md}


def write_plots(results: list[dict[str, Any]], directory: Path) -> list[Path]:
    """E(V) curves with their fits, g(r) and MSD, as PNG files in ``directory``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from matdx.recipes.eos import birch_murnaghan

    directory.mkdir(parents=True, exist_ok=True)
    written = []

    figure, axes = plt.subplots(figsize=(6, 4.5))
    for row in _by_recipe(results, "eos"):
        out = row["output"]
        n = out["nsites"]
        volumes, energies = np.asarray(out["volumes"]), np.asarray(out["energies"])
        grid = np.linspace(volumes.min(), volumes.max(), 200)
        fit = birch_murnaghan(grid, out["E0"], out["V0"], out["B0"], out["B0_prime"])
        (line,) = axes.plot(grid / n, (fit - out["E0"]) / n, label=row["formula"])
        axes.plot(volumes / n, (energies - out["E0"]) / n, "o", color=line.get_color())
    axes.set_xlabel("volume (Å³/atom)")
    axes.set_ylabel("E − E0 (eV/atom)")
    axes.set_title("EMT equations of state, Birch–Murnaghan fits")
    axes.legend()
    figure.tight_layout()
    written.append(directory / "eos.png")
    figure.savefig(written[-1], dpi=120)
    plt.close(figure)

    md = sorted(_by_recipe(results, "md"), key=lambda r: r["output"]["temperature_K"])
    for name, x, y, xlabel, ylabel in (
        ("rdf.png", "r", "g_r", "r (Å)", "g(r)"),
        ("msd.png", "time_fs", "msd_A2", "time (fs)", "MSD (Å²)"),
    ):
        figure, axes = plt.subplots(figsize=(6, 4.5))
        for row in md:
            out = row["output"]
            axes.plot(out[x], out[y], label=f"{out['temperature_K']:g} K")
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.set_title(
            f"{md[0]['workflow'].removeprefix('md ').rsplit(' ', 2)[0]}, EMT, Langevin NVT"
        )
        axes.legend()
        figure.tight_layout()
        written.append(directory / name)
        figure.savefig(written[-1], dpi=120)
        plt.close(figure)
    return written
