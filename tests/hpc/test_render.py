"""Batch-script bodies for every scheduler: structure, exit codes, and injection safety.

Each script is executed with bash in a temporary directory: directive lines are
comments to bash, so the body runs exactly as it would on a compute node. Shell
metacharacters in any field either are rejected when Resources is built (names,
paths: see test_resources.py) or end up as inert data, proved by a canary file
that must not appear.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from matdx.hpc.errors import ResourceError
from matdx.hpc.lsf import LSFScheduler
from matdx.hpc.pbs import PBSProScheduler, TorqueScheduler
from matdx.hpc.resources import Resources
from matdx.hpc.scheduler import Scheduler, make_scheduler, scheduler_classes
from matdx.hpc.sge import SGEScheduler
from matdx.hpc.slurm import SlurmScheduler

ADAPTERS = [
    SlurmScheduler(),
    PBSProScheduler(),
    TorqueScheduler(),
    LSFScheduler(),
    SGEScheduler(parallel_environment="smp"),
]
ADAPTER_IDS = [a.name for a in ADAPTERS]

PAYLOADS = [
    "; touch {canary}",
    "$(touch {canary})",
    "`touch {canary}`",
    "' ; touch {canary}; '",
    '" ; touch {canary}; "',
    "\\'; touch {canary} #",
    "${{IFS}}touch${{IFS}}{canary}",
    "| touch {canary}",
    "&& touch {canary} &",
    "> {canary}",
    "$((6*7)) $HOME ~ *",
]


# A line break in any value would put the rest on a line of its own, which the scheduler reads
# as a directive whatever the shell's quoting (SGE obeys a "#$" line anywhere in the script).
LINE_BREAKS = ["x\n#$ -l h_rt=999:00:00", "x\r#SBATCH --uid=0", "x\n#PBS -l walltime=999:00:00",
               "x\u2028#BSUB -W 999:00"]


@pytest.mark.parametrize("adapter", ADAPTERS, ids=ADAPTER_IDS)
@pytest.mark.parametrize("payload", LINE_BREAKS)
@pytest.mark.parametrize("place", ["environment", "pre_commands", "post_commands", "command"])
def test_line_breaks_never_reach_a_batch_script(adapter, payload, place):
    fields = {
        "environment": {"environment": {"MATDX_PAYLOAD": payload}},
        "pre_commands": {"pre_commands": [["echo", payload]]},
        "post_commands": {"post_commands": ["echo " + shlex.quote(payload)]},
        "command": {},
    }[place]
    def render() -> str:
        resources = Resources(job_name="inject", walltime=60, **fields)
        return adapter.render(resources, [["echo", payload if place == "command" else "ok"]])

    with pytest.raises(ResourceError, match="line break") as info:
        render()
    assert "U+" in str(info.value)  # names the character


def run_script(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Write ``text`` to tmp_path/job.sh and run it with bash there."""
    script = tmp_path / "job.sh"
    script.write_text(text)
    return subprocess.run(
        ["bash", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)}, check=False,
    )


@pytest.mark.parametrize("adapter", ADAPTERS, ids=ADAPTER_IDS)
@pytest.mark.parametrize("template", PAYLOADS)
def test_payloads_in_environment_and_commands_are_inert(adapter, template, tmp_path):
    canary = tmp_path / "canary"
    payload = template.format(canary=canary)
    printf = ["printf", "%s\\n"]
    resources = Resources(
        job_name="inject",
        walltime=60,
        working_directory=tmp_path,
        environment={"MATDX_PAYLOAD": payload},
        pre_commands=[[*printf, payload], "printf '%s\\n' " + payload],
        post_commands=[[*printf, payload], "printf '%s\\n' " + payload],
    )
    show_env = [sys.executable, "-c",
                "import os, sys; sys.stdout.write(repr(os.environ['MATDX_PAYLOAD']) + '\\n')"]
    text = adapter.render(resources, [[*printf, payload], show_env,
                                      "printf '%s\\n' " + payload])
    result = run_script(text, tmp_path)

    assert not canary.exists(), f"payload {payload!r} executed:\n{text}"
    assert result.returncode == 0, result.stderr
    words = shlex.split("printf '%s\\n' " + payload)[2:]
    block = [payload, *words] if words else [payload, ""]
    expected = block + [payload, repr(payload)] + (words or [""]) + block
    assert result.stdout == "\n".join(expected) + "\n"


@pytest.mark.parametrize("cls", list(scheduler_classes().values()), ids=lambda c: c.name)
def test_directive_guard_rejects_unsafe_words(cls):
    adapter = cls(parallel_environment="mpi") if cls is SGEScheduler else cls()
    for word in ("a b", "a;b", "$(id)", "`id`", "a\nb", "'q'", '"q"', "a|b", "a&b", ""):
        with pytest.raises(ResourceError, match="unsafe value"):
            adapter._directive("-x", word)


def test_unsafe_names_never_reach_a_script():
    # Names and paths are rejected before any adapter sees them (more in test_resources.py).
    for field, value in [("job_name", "a\n#SBATCH --uid=0"), ("partition", "x;id"),
                         ("output", "/tmp/$(id)"), ("modules", ["gcc`id`"])]:
        with pytest.raises(ResourceError, match=field):
            Resources(walltime=60, **{field: value})


@pytest.mark.parametrize("adapter", ADAPTERS, ids=ADAPTER_IDS)
def test_body_structure(adapter):
    resources = Resources(
        job_name="body", walltime=60, working_directory="/scratch/run 1".replace(" ", "_"),
        modules=["gcc/12.3.0", "openmpi/4.1.5"], environment={"A": "1", "OMP_NUM_THREADS": "4"},
        pre_commands=["ulimit -s unlimited"], post_commands=[["echo", "done"]],
    )
    lines = adapter.render(resources, [["mpirun", "-np", "4", "pw.x"]]).splitlines()
    assert lines[0] == "#!/bin/bash"
    directives = [ln for ln in lines[1:] if ln.startswith("#") and not ln.startswith("# ")]
    assert directives
    assert all(ln.startswith(adapter.directive + " ") for ln in directives)
    body = lines[lines.index("") + 2:]
    assert body == [
        "cd -- /scratch/run_1 || exit 1",
        "module load gcc/12.3.0 openmpi/4.1.5 || exit",
        "export OMP_NUM_THREADS=4",
        "export A=1",
        "ulimit -s unlimited || exit",
        "matdx_main() {",
        "    mpirun -np 4 pw.x || return",
        "}",
        "matdx_main",
        "matdx_status=$?",
        "echo done",
        'exit "$matdx_status"',
    ]


def test_main_failure_skips_later_commands_runs_post_and_keeps_exit_code(tmp_path):
    resources = Resources(walltime=60, working_directory=tmp_path,
                          post_commands=[["touch", str(tmp_path / "post-ran")]])
    text = SlurmScheduler().render(resources, [
        ["touch", str(tmp_path / "first-ran")],
        ["sh", "-c", "exit 3"],
        ["touch", str(tmp_path / "third-ran")],
    ])
    result = run_script(text, tmp_path)
    assert result.returncode == 3
    assert (tmp_path / "first-ran").exists()
    assert not (tmp_path / "third-ran").exists()
    assert (tmp_path / "post-ran").exists()


def test_failing_pre_command_ends_job_with_its_exit_code(tmp_path):
    resources = Resources(walltime=60, working_directory=tmp_path,
                          pre_commands=[["sh", "-c", "exit 5"]],
                          post_commands=[["touch", str(tmp_path / "post-ran")]])
    text = SlurmScheduler().render(resources, [["touch", str(tmp_path / "main-ran")]])
    result = run_script(text, tmp_path)
    assert result.returncode == 5
    assert not (tmp_path / "main-ran").exists()
    assert not (tmp_path / "post-ran").exists()


def test_missing_working_directory_fails_the_job(tmp_path):
    text = SlurmScheduler().render(
        Resources(walltime=60, working_directory=tmp_path / "missing"),
        [["touch", str(tmp_path / "ran")]],
    )
    result = run_script(text, tmp_path)
    assert result.returncode == 1
    assert not (tmp_path / "ran").exists()


def test_render_needs_commands():
    with pytest.raises(ResourceError, match="at least one command"):
        SlurmScheduler().render(Resources(walltime=60), [])
    with pytest.raises(ResourceError, match="invalid commands"):
        SlurmScheduler().render(Resources(walltime=60), [""])
    with pytest.raises(ResourceError, match="got the string 'hostname'; wrap it in a list"):
        SlurmScheduler().render(Resources(walltime=60), "hostname")


def test_write_script_is_atomic_and_executable(tmp_path):
    path = SlurmScheduler().write_script(Resources(walltime=60), ["hostname"], tmp_path / "a.sh")
    assert path == tmp_path / "a.sh"
    assert stat.S_IMODE(path.stat().st_mode) == 0o750
    assert path.read_text().startswith("#!/bin/bash\n#SBATCH")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.sh"]


@pytest.mark.parametrize("shell", ["/bin/bash -l", "/bin/sh", "/usr/bin/zsh"])
def test_accepted_shells(shell):
    assert SlurmScheduler(shell=shell).render(Resources(walltime=60), ["true"]).startswith(
        f"#!{shell}\n"
    )


@pytest.mark.parametrize("shell", ["bash", "/bin/bash -c 'id'", "/usr/bin/python3", "/bin/bash;id"])
def test_rejected_shells(shell):
    with pytest.raises(ResourceError, match="shell"):
        SlurmScheduler(shell=shell)


def test_make_scheduler():
    assert isinstance(make_scheduler("slurm"), SlurmScheduler)
    assert make_scheduler("sge", parallel_environment="mpi").parallel_environment == "mpi"
    with pytest.raises(ValueError, match="unknown scheduler 'moab'; known: lsf, pbspro"):
        make_scheduler("moab")
    with pytest.raises(TypeError):
        make_scheduler("slurm", parallel_environment="mpi")


@pytest.mark.parametrize("adapter", ADAPTERS, ids=ADAPTER_IDS)
def test_job_ids_are_validated_before_reaching_a_command(adapter, fake_runner):
    adapter = type(adapter)(runner=fake_runner) if not isinstance(adapter, SGEScheduler) \
        else SGEScheduler(runner=fake_runner)
    for bad in ("1;id", "$(id)", "-1", "1 2", "", "1\n2"):
        with pytest.raises(ValueError, match="job id"):
            adapter.poll([bad])
        with pytest.raises(ValueError, match="job id"):
            adapter.cancel([bad])
    assert fake_runner.calls == []
    assert adapter.poll([]) == {}
    adapter.cancel([])
    assert fake_runner.calls == []


def test_scheduler_is_abstract():
    with pytest.raises(TypeError):
        Scheduler()  # type: ignore[abstract]
