"""Shared helpers of the code-adapter tests.

Tests marked ``programs`` run the real Quantum ESPRESSO, LAMMPS and CP2K from Debian. They never
skip: a missing program fails the test with the ``apt-get install`` line that fixes it.
VASP cannot be installed; its tests read recorded outputs (``fixtures/vasp``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from matdx.codes.base import Template
from matdx.codes.espresso import DEFAULT_PSEUDO_DIR, EspressoTemplate
from matdx.codes.execution import MPIRUN, Profile

FIXTURES = Path(__file__).parent / "fixtures"

PACKAGES = {
    "pw.x": "quantum-espresso quantum-espresso-data",
    "lmp": "lammps lammps-data",
    "cp2k": "cp2k cp2k-data",
    "gpaw": "gpaw gpaw-data",
    "mpirun": "openmpi-bin",
}

MPI_ENVIRONMENT = {
    # OpenMPI refuses to run as root and to oversubscribe the 2 cores of the CI machines.
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
}


# pw.x parameters of the Quantum ESPRESSO tests: cheap, not converged.
PW_SI = {
    "system": {"ecutwfc": 20.0},
    "kpoints": {"density": 2.5},
    "pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"},
}
"""Silicon with fixed occupations (an insulator)."""
PW_AL_SMEARING = {
    "system": {"ecutwfc": 15.0, "occupations": "smearing", "smearing": "mv", "degauss": 0.02},
    "kpoints": {"density": 3.0},
}
"""Aluminium with Marzari-Vanderbilt smearing (a metal)."""


def require(program: str, data: str | Path | None = None) -> None:
    """Fail (never skip) when ``program`` or its data directory is missing."""
    package = PACKAGES[program]
    if shutil.which(program) is None:
        pytest.fail(f"{program} is not installed; run: apt-get install {package}")
    if data is not None and not Path(data).is_dir():
        pytest.fail(f"{data} is missing; run: apt-get install {package}")


def profile_for(template: Template, **kwargs: object) -> Profile:
    """The template's default profile with the MPI launcher and root-friendly OpenMPI."""
    return template.profile(mpi=MPIRUN, environment=MPI_ENVIRONMENT, **kwargs)


def pw_template() -> EspressoTemplate:
    """The pw.x template, after checking that pw.x and its pseudopotentials are installed."""
    require("pw.x", DEFAULT_PSEUDO_DIR)
    return EspressoTemplate()


def handlers_firing(template: Template, directory: Path) -> set[str]:
    """Names of the template's handlers that detect a failure in ``directory``."""
    return {handler.name for handler in template.handlers if handler.detect(directory)}


def copy_fixture(case: str, tmp_path: Path) -> Path:
    """A writable copy of ``fixtures/CASE`` (handlers only read, but tests may add files)."""
    target = tmp_path / case.replace("/", "_")
    shutil.copytree(FIXTURES / case, target)
    return target
