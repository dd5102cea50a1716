"""Site profiles: loading, validation errors naming file and field, resources, check_site."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from matdx.hpc.errors import ResourceError, SiteProfileError
from matdx.hpc.sge import SGEScheduler
from matdx.hpc.sites import (
    SITES_DIR,
    MPILauncher,
    check_site,
    find_site,
    list_sites,
    load_site,
)
from matdx.hpc.slurm import SlurmScheduler

from .conftest import Reply, fixture_text

MINIMAL = {
    "scheduler": "slurm",
    "scratch": "/scratch/matdx",
    "partitions": {"debug": {"cores_per_node": 8, "memory_per_node": "16G",
                             "max_walltime": "01:00:00", "max_nodes": 2}},
}


def write_profile(tmp_path: Path, data, name: str = "site") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_builtin_profiles_include_the_test_cluster_and_a_big_site():
    sites = list_sites()
    expected = {"local-slurm-testcluster", "example-slurm-centre", "example-pbspro-centre"}
    assert expected <= set(sites)
    assert all(path.parent == SITES_DIR for path in sites.values())


@pytest.mark.parametrize("name", sorted(p.stem for p in SITES_DIR.glob("*.yaml")))
def test_builtin_profiles_are_valid(name):
    site = load_site(name)
    assert site.name == name
    assert site.partitions
    assert site.scheduler_adapter().name == site.scheduler


def test_testcluster_profile():
    site = load_site("local-slurm-testcluster")
    assert site.scheduler == "slurm"
    assert site.partition() == ("debug", site.partitions["debug"])
    assert site.partitions["debug"].cores_per_node == 8
    assert site.environment["OMPI_ALLOW_RUN_AS_ROOT"] == "1"
    assert isinstance(site.scheduler_adapter(), SlurmScheduler)
    assert site.mpi.argv(4) == ["mpirun", "-np", "4"]


def test_big_site_profile():
    site = load_site("example-slurm-centre")
    assert site.require_account
    assert site.partitions["gpu"].gpus_per_node == 4
    assert site.partitions["standard"].max_walltime == 2 * 86400
    assert site.partitions["highmem"].memory_per_node == 1024**2
    assert site.mpi.argv(256)[:3] == ["srun", "--ntasks", "256"]
    assert site.scheduler_adapter().shell == "/bin/bash -l"


def test_load_by_path_and_default_name(tmp_path):
    site = load_site(write_profile(tmp_path, MINIMAL, "my-cluster"))
    assert site.name == "my-cluster"
    assert site.default_partition is None
    assert site.partition()[0] == "debug"
    assert site.max_jobs_in_queue == 100
    assert site.min_poll_interval == 30
    assert site.mpi == MPILauncher()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scheduler": None}, "scheduler: Field required"),
        ({"scheduler": "moab"}, "scheduler: Input should be 'slurm', 'pbspro', 'torque', 'lsf'"),
        ({"partitions": {}}, "partitions: at least one partition"),
        ({"partitions": {"debug": {"cores_per_node": 8, "memory_per_node": "16G",
                                   "max_walltime": "10:00"}}},
         "partitions.debug.max_walltime: '10:00' is not a walltime"),
        ({"partitions": {"debug": {"cores_per_node": 0, "memory_per_node": "16G",
                                   "max_walltime": "1h"}}},
         "partitions.debug.cores_per_node: Input should be greater than or equal to 1"),
        ({"partitions": {"deb ug": {"cores_per_node": 8, "memory_per_node": "1G",
                                    "max_walltime": "1h"}}}, "partitions: 'deb ug' is not a safe"),
        ({"partitions": {"debug": {"cores_per_node": 8, "max_walltime": "1h"}}},
         "partitions.debug.memory_per_node: Field required"),
        ({"default_partition": "gpu"}, "default_partition 'gpu' is not one of the partitions"),
        ({"scheduler_options": {"parallel_environment": "mpi"}},
         "scheduler_options: ['parallel_environment'] not all accepted by SlurmScheduler"),
        ({"scheduler_options": {"timeout": 5}}, "scheduler_options: timeout are top-level"),
        ({"scheduler": "sge", "scheduler_options": {"parallel_environment": "a b"}},
         "parallel environment name"),
        ({"shell": "/usr/bin/python3"}, "shell '/usr/bin/python3' is not accepted"),
        ({"environment": {"BAD NAME": "1"}}, "environment: 'BAD NAME' is not a valid"),
        ({"modules": ["gcc;id"]}, "modules: 'gcc;id' is not a safe module name"),
        ({"scratch": "/scratch/$(id)"}, "scratch: '/scratch/$(id)' is not a safe scratch path"),
        ({"mpi": {"launcher": "-x"}}, "mpi.launcher: '-x' is not a program"),
        ({"mpi": {"ranks_flag": "np"}}, "mpi.ranks_flag: 'np' is not a command-line flag"),
        ({"mpi": {"launcher": "mpirun", "nprocs": 3}}, "mpi.nprocs: Extra inputs"),
        ({"partitons": {}}, "partitons: Extra inputs are not permitted"),
        ({"max_jobs_in_queue": 0}, "max_jobs_in_queue: Input should be greater than or equal"),
        ({"min_poll_interval": "often"}, "min_poll_interval: 'often' is not a walltime"),
        ({"pre_commands": "module purge"}, "pre_commands: expected a list of commands"),
        ({"account": "x y"}, "account: 'x y' is not a safe name"),
        ({"environment": {"PATH": "/x\n#$ -l h_rt=9:00:00"}},
         "environment: value of PATH: contains a line break (U+000A)"),
        ({"pre_commands": [["source", "/env\r#SBATCH --uid=0"]]},
         "pre_commands: command argument: contains a line break (U+000D)"),
        ({"mpi": {"launcher": "mpirun", "args": ["--x\n#PBS -q long"]}},
         "MPI launcher argument: contains a line break (U+000A)"),
        ({"scheduler": "sge", "scheduler_options": {"parallel_environment": "smp\n#$ -u root"}},
         "scheduler_options.parallel_environment: contains a line break"),
    ],
)
def test_invalid_profiles_name_file_and_field(tmp_path, change, message):
    data = {**MINIMAL, **change}
    data = {k: v for k, v in data.items() if v is not None}
    path = write_profile(tmp_path, data)
    with pytest.raises(SiteProfileError) as info:
        load_site(path)
    text = str(info.value)
    assert text.startswith(f"invalid site profile {path}: ")
    assert message in text


def test_not_yaml_or_not_a_mapping(tmp_path):
    with pytest.raises(SiteProfileError, match="is not valid YAML"):
        load_site(write_profile(tmp_path, "scheduler: [slurm\n"))
    with pytest.raises(SiteProfileError, match="must be a mapping, got list"):
        load_site(write_profile(tmp_path, "- slurm\n"))


def test_unquoted_walltime_is_read_as_seconds_by_yaml(tmp_path):
    # YAML 1.1 reads 24:00:00 as the base-60 integer 86400, which is the right number of
    # seconds; the docs still ask for quotes because 2:00 would become 120 seconds.
    text = yaml.safe_dump(MINIMAL).replace("max_walltime: 01:00:00", "max_walltime: 24:00:00")
    assert yaml.safe_load(text)["partitions"]["debug"]["max_walltime"] == 86400
    assert load_site(write_profile(tmp_path, text)).partitions["debug"].max_walltime == 86400


def test_find_site_errors(tmp_path):
    with pytest.raises(SiteProfileError, match=r"no site profile named 'nope' \(known: .*"
                                               r"local-slurm-testcluster"):
        find_site("nope")
    with pytest.raises(SiteProfileError, match=r"site profile file .* not found"):
        find_site(tmp_path / "missing.yaml")
    with pytest.raises(SiteProfileError, match=r"site profile file '\.\./no-such/x' not found"):
        find_site("../no-such/x")
    with pytest.raises(SiteProfileError, match="not a safe site name"):
        find_site("bad name")


def test_search_path_env_shadows_builtins(tmp_path, monkeypatch):
    write_profile(tmp_path, {**MINIMAL, "description": "mine"}, "local-slurm-testcluster")
    monkeypatch.setenv("MATDX_SITES_PATH", f"{tmp_path / 'absent'}:{tmp_path}")
    assert find_site("local-slurm-testcluster") == tmp_path / "local-slurm-testcluster.yaml"
    assert load_site("local-slurm-testcluster").description == "mine"


# ---------------------------------------------------------------- resources
def big_site_yaml(tmp_path: Path) -> Path:
    return write_profile(tmp_path, textwrap.dedent("""\
        scheduler: slurm
        scratch: /scratch/matdx
        require_account: true
        account: e123
        default_partition: standard
        modules: [gcc/12.3.0]
        environment: {OMP_PLACES: cores, A: site}
        pre_commands: [ulimit -s unlimited]
        partitions:
          standard: {cores_per_node: 128, memory_per_node: 256G, max_walltime: "2-00:00:00",
                     max_nodes: 64}
          gpu: {cores_per_node: 64, memory_per_node: 512G, max_walltime: "1-00:00:00",
                max_nodes: 16, gpus_per_node: 4}
        """), "big")


def test_resources_merge_site_defaults(tmp_path):
    site = load_site(big_site_yaml(tmp_path))
    res = site.resources(job_name="eos", walltime="10h", nodes=4, ranks_per_node=128,
                         modules=["quantum-espresso/7.2"], environment={"A": "mine"},
                         pre_commands=[["echo", "hi"]])
    assert res.partition == "standard"
    assert res.account == "e123"
    assert res.modules == ("gcc/12.3.0", "quantum-espresso/7.2")
    assert res.environment == {"OMP_PLACES": "cores", "A": "mine"}
    assert res.pre_commands == (("ulimit", "-s", "unlimited"), ("echo", "hi"))
    assert site.resources(walltime=60, partition="gpu", gpus_per_node=4).partition == "gpu"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"partition": "huge"}, "partition: 'huge' is not a partition of site 'big' "
                                "(known: standard, gpu)"),
        ({"nodes": 65}, "nodes: 65 exceeds max_nodes 64 of partition 'standard'"),
        ({"ranks_per_node": 64, "threads_per_rank": 3},
         "ranks_per_node × threads_per_rank: 192 cores exceed cores_per_node 128"),
        ({"memory": "300G"}, "memory: 300G exceeds memory_per_node 256G"),
        ({"walltime": "3-00:00:00"}, "walltime: 72:00:00 exceeds max_walltime 48:00:00"),
        ({"gpus_per_node": 1}, "gpus_per_node: 1 exceeds 0"),
        ({"account": None}, "account: site 'big' requires an account"),
        ({"job_name": "a;b"}, "job_name: 'a;b' is not a safe job name"),
    ],
)
def test_resources_over_limits_name_the_field(tmp_path, request_, message):
    site = load_site(big_site_yaml(tmp_path))
    with pytest.raises(ResourceError, match=None) as info:
        site.resources(**{"walltime": "1h", **request_})
    assert message in str(info.value)


def test_scratch_expansion(tmp_path, monkeypatch):
    site = load_site(write_profile(tmp_path, {**MINIMAL, "scratch": "$MATDX_T_SCRATCH/runs"}))
    monkeypatch.setenv("MATDX_T_SCRATCH", str(tmp_path))
    assert site.scratch_path() == tmp_path / "runs"
    monkeypatch.delenv("MATDX_T_SCRATCH")
    with pytest.raises(SiteProfileError, match=r"scratch: .* not set here"):
        site.scratch_path()


def test_sge_site_passes_options(tmp_path):
    options = {"parallel_environment": "mpi"}
    site = load_site(write_profile(tmp_path, {**MINIMAL, "scheduler": "sge",
                                              "scheduler_options": options}))
    adapter = site.scheduler_adapter()
    assert isinstance(adapter, SGEScheduler)
    assert adapter.parallel_environment == "mpi"


# ---------------------------------------------------------------- check_site, offline
def fake_which(found: set[str]):
    return lambda program: f"/usr/bin/{program}" if program in found else None


SLURM_PROGRAMS = {"sbatch", "squeue", "scontrol", "scancel", "sinfo"}


def test_check_site_without_scheduler_commands_skips_live_checks(tmp_path):
    path = write_profile(tmp_path, {**MINIMAL, "scratch": str(tmp_path)})
    report = check_site(path, which=fake_which(set()))
    assert report.ok
    assert [(c.name, c.status) for c in report.checks] == [
        ("profile", "pass"), ("scratch", "pass"), ("commands", "skip"),
        ("partitions", "skip"), ("mpi", "warn"),
    ]
    assert "OK" in report.format().splitlines()[-1]


def test_check_site_with_some_commands_missing_fails(tmp_path):
    report = check_site(write_profile(tmp_path, MINIMAL),
                        which=fake_which(SLURM_PROGRAMS - {"scontrol"}))
    assert not report.ok
    assert ("commands", "fail") in [(c.name, c.status) for c in report.checks]
    assert "missing on PATH: scontrol" in report.format()


def test_check_site_compares_partitions(tmp_path, fake_runner):
    fake_runner.replies[("sinfo",)] = Reply(stdout=fixture_text("slurm_sinfo.txt"))
    data = {**MINIMAL, "partitions": {
        "debug": {"cores_per_node": 16, "memory_per_node": "64G", "max_walltime": "1h",
                  "max_nodes": 2},
        "gpu": {"cores_per_node": 8, "memory_per_node": "1G", "max_walltime": "1h"},
    }}
    report = check_site(write_profile(tmp_path, data), runner=fake_runner,
                        which=fake_which(SLURM_PROGRAMS | {"mpirun"}))
    lines = {c.name: c for c in report.checks}
    assert not report.ok
    assert lines["partition debug"].status == "fail"
    assert lines["partition debug"].detail == (
        "profile cores_per_node 16 > 8 reported; profile memory_per_node 64G > 22899M "
        "reported; profile max_nodes 2 > 1 nodes reported"
    )
    assert lines["partition gpu"].detail == "not reported by slurm (known: debug)"
    assert lines["mpi"].status == "pass"
    assert lines["scratch"].status == "warn"


def test_check_site_passes_on_matching_cluster(tmp_path, fake_runner):
    fake_runner.replies[("sinfo",)] = Reply(stdout=fixture_text("slurm_sinfo.txt"))
    report = check_site("local-slurm-testcluster", runner=fake_runner,
                        which=fake_which(SLURM_PROGRAMS | {"mpirun"}))
    assert report.ok, report.format()
    assert {c.name: c.status for c in report.checks}["partition debug"] == "pass"


def test_check_site_reports_scheduler_errors(tmp_path, fake_runner):
    fake_runner.replies[("sinfo",)] = Reply(
        stderr="sinfo: error: Unable to contact slurm controller\n", returncode=1)
    report = check_site(write_profile(tmp_path, MINIMAL), runner=fake_runner,
                        which=fake_which(SLURM_PROGRAMS))
    assert not report.ok
    assert "cannot list partitions" in report.format()
    assert "Unable to contact slurm controller" in report.format()


def test_check_site_invalid_profile_is_a_report_not_an_exception(tmp_path):
    report = check_site(write_profile(tmp_path, {**MINIMAL, "scheduler": "moab"}))
    assert not report.ok
    assert report.profile is None
    assert report.checks[0].name == "profile"
    assert "scheduler" in report.checks[0].detail
    assert not check_site("no-such-site").ok
